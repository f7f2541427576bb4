"""Second scoring mode: option likelihood ("cloze"), next to the harness's letter scoring.

Each option's text is scored as the continuation of "[prefix] <question stem>\\nAnswer:" by
its mean per-token log-probability (length-normalised, so long options are not penalised);
the best-scoring option is the answer. Unlike letter scoring, the model does not have to
compare the options listed in a prompt: it only has to find the right text likely, which
is exactly what the caption-alignment stage trains ("[prefix] <stem>\\nAnswer: <description>").
The inputs come from the same `build_inputs` as training and letter scoring.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from qa.scoring import ScoreResult

ANSWER_CUE = "\nAnswer:"
MAX_OPTION_TOKENS = 48


def cloze_prompt_ids(tokenizer, stem: str) -> list[int]:
    return tokenizer.encode(stem.strip() + ANSWER_CUE, add_special_tokens=False)


def option_ids(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(" " + text.strip(), add_special_tokens=False)[:MAX_OPTION_TOKENS]


def score_by_option_likelihood(model, tokenizer, questions, *, batch_size: int = 32, progress: bool = True):
    """`qa.scoring.ScoreResult` whose `letter_logprobs` hold the options' mean token log-probs."""
    rows = []  # (question index, option index, codes, prompt, option ids)
    for i, q in enumerate(questions):
        prompt = cloze_prompt_ids(tokenizer, q.question)
        for j, opt in enumerate(q.options):
            rows.append((i, j, list(q.codes), prompt, option_ids(tokenizer, opt)))
    order = sorted(range(len(rows)), key=lambda r: (len(rows[r][3]) + len(rows[r][4]), r))
    n = len(questions)
    max_opt = max((len(q.options) for q in questions), default=0)
    scores = np.full((n, max_opt), -np.inf, dtype=np.float32)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), tqdm(total=len(rows), desc="option scoring", unit="opt", disable=not progress) as bar:
            for start in range(0, len(rows), batch_size):
                chunk = [rows[r] for r in order[start:start + batch_size]]
                batch = model.inputs([c[2] for c in chunk], [c[3] for c in chunk], [c[4] for c in chunk])
                labels = batch.pop("labels")
                k = max(len(c[4]) for c in chunk) + 1
                logits = model(**batch, logits_to_keep=k, use_cache=False).logits.float()
                lp = torch.log_softmax(logits[:, :-1], dim=-1)
                tgt = labels[:, -(k - 1):]
                mask = tgt != -100
                tok_lp = lp.gather(-1, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
                mean = (tok_lp.sum(-1) / mask.sum(-1).clamp(min=1)).cpu().numpy()
                for (i, j, *_), s in zip(chunk, mean):
                    scores[i, j] = s
                bar.update(len(chunk))
    finally:
        model.train(was_training)
    pred = scores.argmax(axis=1).astype(np.int64) if n else np.zeros(0, dtype=np.int64)
    answer = np.array([q.answer for q in questions], dtype=np.int64)
    return ScoreResult(ids=[q.id for q in questions], pred=pred, correct=pred == answer, letter_logprobs=scores,
                       answer=answer)
