"""The text-baseline arm ("lora+text"): what a practitioner tries first.

Stage 1 trains LoRA (no prefix, no projector) on the *same* alignment codes the prefix arm
captions, with the code written as text; stage 2 is the same QA stage as every arm. On
held-out codes it can only generalise through what the code string itself carries (chapter
letter, digits) and what stage 1 taught about neighbouring code strings.

Caption layouts (`FinetuneConfig.text_caption`):
    question  "What does the ICD-10-CM code X denote?\\nAnswer:" -> " <description>": the prefix
              arm's caption token for token, without the soft prefix (default: the two arms then
              differ only in the prefix and in which parameters train)
    means     "X means" -> " <description>" (the issue's example layout)

Why not trl's SFTTrainer (trl is installed): the arm must share the job's budget accounting
(one curve record per optimizer step with its examples and tokens, checked by the runner's
equal-budget test), its exact gradient accumulation, warm-up rule, seeded data order and
dropout, its kill-and-resume checkpoints (fingerprinted), and the deterministic-CPU-kernel
switch. SFTTrainer has its own loop, scheduler, sampler, checkpoint format and loss
normalisation (per device batch), so the text baseline would not be trained like the arms it
is compared with; stage 1 here is `llm_adapter.train_loop.train_stage` with lora=True.
"""

from __future__ import annotations

from llm_adapter.data import alignment_codes, code_question
from llm_adapter.option_scoring import cloze_prompt_ids, option_ids


def caption_prompt(code_id: str, layout: str = "question") -> str:
    """The text a caption's answer (the description) follows."""
    if layout == "means":
        return f"{code_id} means"
    return code_question(code_id)


def text_caption_examples(tokenizer, vocab, cfg, excluded: set[str]) -> list[tuple[list[str], list[int], list[int]]]:
    """([code], prompt_ids, description_ids) per alignment code (the code is inert: the arm has no
    prefix): the same codes, in the same order, as
    `llm_adapter.data.alignment_examples` draws for the prefix arm (same seed, same exclusions)."""
    n = cfg.align.steps * cfg.align.batch_size * cfg.align.grad_accum
    codes = alignment_codes(vocab, cfg, excluded)[: max(n, 1)]
    desc = vocab.codes.set_index("code_id").loc[codes, "description"].tolist() if codes else []
    out = []
    for c, d in zip(codes, desc):
        text = caption_prompt(c, cfg.text_caption)
        prompt = (cloze_prompt_ids(tokenizer, text) if cfg.text_caption == "question"
                  else tokenizer.encode(text, add_special_tokens=False))
        out.append(([c], prompt, option_ids(tokenizer, d)))
    return out


def caption_texts(tokenizer, examples) -> list[tuple[str, str]]:
    """(prompt, answer) texts of caption examples, for leak checks and inspection."""
    return [(tokenizer.decode(p), tokenizer.decode(a)) for _, p, a in examples]
