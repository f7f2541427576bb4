"""Multiple-choice scoring by option-letter log-likelihood.

The prompt is the model's own chat template around one user message (question + lettered
options + "answer with the letter"), with the generation prompt appended. The model's
answer is the option letter with the highest next-token log-probability at the last
prompt position: deterministic, one forward pass per question, no parsing.

The adapter (soft-prefix) path plugs in through `InputBuilder`: it receives the questions
and their prompt token ids and returns left-padded `inputs_embeds` / `attention_mask` /
`position_ids`, so the scorer never needs to know whether a prefix was prepended.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from qa.lm import pad_token_id
from qa.types import LETTERS, MCQuestion

INSTRUCTION = "Answer with the letter of the correct option only."


def format_question(q: MCQuestion) -> str:
    """The user-message text: stem, lettered options ("A: ..."), instruction."""
    opts = "\n".join(f"{LETTERS[i]}: {o}" for i, o in enumerate(q.options))
    return f"{q.question.strip()}\n{opts}\n{INSTRUCTION}"


def _messages(q: MCQuestion) -> list[dict]:
    return [{"role": "user", "content": format_question(q)}]


def _template_ids(tokenizer, messages, add_generation_prompt: bool) -> list[int]:
    # transformers 5 returns a BatchEncoding unless return_dict=False
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                        tokenize=True, return_dict=False)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return [int(i) for i in ids]


def answer_ids(tokenizer, q: MCQuestion) -> list[int]:
    """Tokens of the assistant turn "<letter><end-of-turn>" as the chat template writes them.

    Taken as the difference between the templated conversation with the answer and the
    generation prompt; trailing whitespace after the end-of-turn token is dropped. Falls back
    to letter + eos for templates whose prompt is not a prefix of the full conversation.
    """
    prompt = _template_ids(tokenizer, _messages(q), add_generation_prompt=True)
    full = _template_ids(tokenizer, _messages(q) + [{"role": "assistant", "content": q.answer_letter}],
                         add_generation_prompt=False)
    if full[: len(prompt)] == prompt and len(full) > len(prompt):
        tail = full[len(prompt):]
        while len(tail) > 1 and not tokenizer.decode(tail[-1:]).strip():
            tail = tail[:-1]
        return tail
    return tokenizer.encode(q.answer_letter, add_special_tokens=False) + [tokenizer.eos_token_id]


def build_prompt_ids(tokenizer, q: MCQuestion, *, answer: bool = False) -> list[int]:
    """Chat-templated prompt ending with the generation prompt; with `answer=True` the
    answer tokens (`answer_ids`) are appended (teacher-forcing target for fine-tuning)."""
    ids = _template_ids(tokenizer, _messages(q), add_generation_prompt=True)
    return ids + answer_ids(tokenizer, q) if answer else ids


def letter_token_ids(tokenizer, n_options: int) -> list[int]:
    """First token of each letter A.. as emitted right after the generation prompt."""
    out = []
    for letter in LETTERS[:n_options]:
        ids = tokenizer.encode(letter, add_special_tokens=False)
        if not ids:
            raise ValueError(f"tokenizer maps letter {letter!r} to no token")
        out.append(int(ids[0]))
    if len(set(out)) != len(out):
        raise ValueError(f"letters {LETTERS[:n_options]} do not map to distinct first tokens: {out}")
    return out


class InputBuilder(Protocol):
    def __call__(self, questions: list[MCQuestion], prompt_ids: list[list[int]]) -> dict[str, torch.Tensor]:
        """{"inputs_embeds": [B,T,H], "attention_mask": [B,T], "position_ids": [B,T]}, left-padded."""
        ...


def left_pad(seqs: list[list[int]], pad_id: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [B,T], attention_mask [B,T]) on `device`, padded on the left so every row ends at T-1."""
    T = max(len(s) for s in seqs)
    cpu = torch.device("cpu")  # filled row by row on the CPU, moved once
    ids = torch.full((len(seqs), T), int(pad_id), dtype=torch.long, device=cpu)
    mask = torch.zeros((len(seqs), T), dtype=torch.long, device=cpu)
    for i, s in enumerate(seqs):
        ids[i, T - len(s):] = torch.tensor(s, dtype=torch.long, device=cpu)
        mask[i, T - len(s):] = 1
    return ids.to(device), mask.to(device)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    # with left padding the first real token must get position 0, whatever the padding length
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def token_input_builder(model, pad_id: int) -> InputBuilder:
    """The no-prefix builder: embeds the prompt tokens with the model's input embeddings."""
    embed = model.get_input_embeddings()

    def build(questions: list[MCQuestion], prompt_ids: list[list[int]]) -> dict[str, torch.Tensor]:
        ids, mask = left_pad(prompt_ids, pad_id, embed.weight.device)
        return {"inputs_embeds": embed(ids), "attention_mask": mask, "position_ids": position_ids_from_mask(mask)}

    return build


@dataclass
class ScoreResult:
    ids: list[str]
    pred: np.ndarray             # int64 [n]: chosen option index
    correct: np.ndarray          # bool [n]
    letter_logprobs: np.ndarray  # float32 [n, max_options], -inf where the question has fewer options
    answer: np.ndarray = field(default=None)  # int64 [n]: gold option index
    texts: list[str] | None = None  # generated answers (generation mode only)

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if len(self.correct) else float("nan")


def _last_logits(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    try:
        # only the last position is needed: skip the [B,T,V] lm_head output where supported
        out = model(**batch, logits_to_keep=1, use_cache=False)
    except TypeError:
        out = model(**batch, use_cache=False)
    return out.logits[:, -1, :]


def _batches(model, tokenizer, questions: list[MCQuestion], batch_size: int,
             input_builder: InputBuilder | None, desc: str, progress: bool):
    """Yield (question rows, built batch) in eval mode under no_grad, shortest prompts first
    (less padding; the order is a pure function of the inputs). Shared by scoring and generation."""
    from tqdm.auto import tqdm

    pad_id = pad_token_id(tokenizer)
    builder = input_builder or token_input_builder(model, pad_id)
    prompts = [build_prompt_ids(tokenizer, q) for q in questions]
    order = sorted(range(len(questions)), key=lambda i: (len(prompts[i]), i))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), tqdm(total=len(questions), desc=desc, unit="q", disable=not progress) as bar:
            for start in range(0, len(questions), batch_size):
                rows = order[start:start + batch_size]
                yield rows, builder([questions[i] for i in rows], [prompts[i] for i in rows])
                bar.update(len(rows))
    finally:
        model.train(was_training)


def score_multiple_choice(model, tokenizer, questions: list[MCQuestion], *, batch_size: int = 8,
                          input_builder: InputBuilder | None = None, progress: bool = True) -> ScoreResult:
    """Choose each question's option by the letter log-probabilities at the last prompt position."""
    n = len(questions)
    max_opt = max((len(q.options) for q in questions), default=0)
    letter_idx = letter_token_ids(tokenizer, max_opt) if n else []
    logprobs = np.full((n, max_opt), -np.inf, dtype=np.float32)
    for rows, batch in _batches(model, tokenizer, questions, batch_size, input_builder, "scoring", progress):
        lp = torch.log_softmax(_last_logits(model, batch).float(), dim=-1)
        lp = lp[:, torch.tensor(letter_idx, dtype=torch.long, device=lp.device)].cpu().numpy()
        for j, i in enumerate(rows):
            k = len(questions[i].options)
            logprobs[i, :k] = lp[j, :k]
    pred = logprobs.argmax(axis=1).astype(np.int64) if n else np.zeros(0, dtype=np.int64)
    answer = np.array([q.answer for q in questions], dtype=np.int64)
    return ScoreResult(ids=[q.id for q in questions], pred=pred, correct=pred == answer,
                       letter_logprobs=logprobs, answer=answer)


# ---- optional generation mode ------------------------------------------------
_LEADING_LETTER = re.compile(r"^\W*([A-J])(?![A-Za-z])")
_STATED_LETTER = re.compile(r"(?:answer|option)\s*(?:is|:)?\s*\(?([A-J])(?![A-Za-z])", re.IGNORECASE)
_ANY_LETTER = re.compile(r"(?<![A-Za-z])([A-J])(?![A-Za-z])")


def parse_answer_letter(text: str, n_options: int) -> int:
    """Option index named by a generated answer ("C", "C: ...", "(C)", "The answer is C"), or -1.

    A leading letter wins, then "answer/option is X", then the first standalone capital letter
    among the valid ones."""
    valid = LETTERS[:n_options]
    for rx in (_LEADING_LETTER, _STATED_LETTER):
        m = rx.search(text)
        if m and m.group(1).upper() in valid:
            return valid.index(m.group(1).upper())
    for m in _ANY_LETTER.finditer(text):
        if m.group(1) in valid:
            return valid.index(m.group(1))
    return -1


def generate_multiple_choice(model, tokenizer, questions: list[MCQuestion], *, batch_size: int = 8,
                             max_new_tokens: int = 16, input_builder: InputBuilder | None = None,
                             progress: bool = True) -> ScoreResult:
    """Greedy generation + `parse_answer_letter`; unparseable answers count as wrong (pred -1).
    `letter_logprobs` is NaN here; the generated texts are in `.texts`."""
    n = len(questions)
    pad_id = pad_token_id(tokenizer)
    texts = [""] * n
    for rows, batch in _batches(model, tokenizer, questions, batch_size, input_builder, "generating", progress):
        # generate() derives positions from the attention mask itself
        out = model.generate(inputs_embeds=batch["inputs_embeds"], attention_mask=batch["attention_mask"],
                             max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id)
        for j, i in enumerate(rows):
            texts[i] = tokenizer.decode(out[j], skip_special_tokens=True)
    pred = np.array([parse_answer_letter(t, len(q.options)) for t, q in zip(texts, questions)], dtype=np.int64)
    answer = np.array([q.answer for q in questions], dtype=np.int64)
    max_opt = max((len(q.options) for q in questions), default=0)
    return ScoreResult(ids=[q.id for q in questions], pred=pred, correct=pred == answer,
                       letter_logprobs=np.full((n, max_opt), np.nan, dtype=np.float32), answer=answer, texts=texts)
