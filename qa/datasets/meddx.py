"""MedDDx: differential-diagnosis multiple choice (the set MedTok fine-tunes and tests on).

The published JSON is a list of `{query, answer, sim_level_std}`: `query` holds the question
followed by option lines `A: ...` .. `D: ...`, `answer` is the letter, and `sim_level_std`
(spread of the options' semantic similarity) gives the difficulty by its authors' rule:
> 0.04 Basic, < 0.02 Expert, otherwise Intermediate (245 / 1,041 / 483 questions).

Splits as in the paper: Intermediate is fine-tuning data, divided deterministically into
train / validation (by a hash of the question text, so the split does not depend on record
order); Basic and Expert are test sets. Each question gets `split` in
{"train", "validation", "test"} and `meta["difficulty"]` in {"basic", "intermediate", "expert"}.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from medtok.paths import shared_data_path
from qa.datasets.common import (MalformedRecord, ParseIssue, filter_split, parse_letter, report_issues,
                                resolve_answer, stable_fraction)
from qa.types import LETTERS, MCQuestion

BASIC_ABOVE = 0.04
EXPERT_BELOW = 0.02
DIFFICULTIES = ("basic", "intermediate", "expert")
_OPTION_RE = re.compile(r"^\s*([A-J])\s*:\s?(.*?)\s*$")


def difficulty(sim_level_std: float) -> str:
    """The MedDDx authors' rule: > 0.04 basic, < 0.02 expert, else intermediate."""
    s = float(sim_level_std)
    if s != s:
        raise ValueError("sim_level_std is NaN")
    if s > BASIC_ABOVE:
        return "basic"
    if s < EXPERT_BELOW:
        return "expert"
    return "intermediate"


def split_query(query: str) -> tuple[str, list[str]]:
    """Question stem and options from a MedDDx `query`: the trailing block of `X: text` lines,
    which must run A, B, C, ... in order. Raises MalformedRecord otherwise."""
    if not isinstance(query, str):
        raise MalformedRecord(f"query is {type(query).__name__}, not text")
    lines = query.rstrip().split("\n")
    opts: list[tuple[str, str]] = []
    i = len(lines)
    while i > 0 and (m := _OPTION_RE.match(lines[i - 1])):
        opts.insert(0, (m.group(1), m.group(2)))
        i -= 1
    stem = "\n".join(lines[:i]).strip()
    if not stem:
        raise MalformedRecord("empty question")
    if len(opts) < 2:
        raise MalformedRecord(f"needs at least 2 options 'A: ...', found {len(opts)}")
    letters = "".join(l for l, _ in opts)
    if letters != LETTERS[: len(opts)]:
        raise MalformedRecord(f"option letters {letters!r} do not run A, B, C, ...")
    empty = [l for l, t in opts if not t]
    if empty:
        raise MalformedRecord(f"empty option(s) {', '.join(empty)}")
    return stem, [t for _, t in opts]


def parse_record(rec, index: int, *, val_fraction: float = 0.2, seed: int = 0) -> MCQuestion:
    if not isinstance(rec, dict):
        raise MalformedRecord(f"record is {type(rec).__name__}, not an object")
    for key in ("query", "answer", "sim_level_std"):
        if key not in rec or rec[key] is None:
            raise MalformedRecord(f"missing field {key!r}")
    stem, options = split_query(rec["query"])
    if parse_letter(rec["answer"]) is None:
        raise MalformedRecord(f"answer {rec['answer']!r} is not an option letter")
    answer = resolve_answer(rec["answer"], options)
    try:
        diff = difficulty(rec["sim_level_std"])
    except (TypeError, ValueError) as e:
        raise MalformedRecord(f"bad sim_level_std {rec['sim_level_std']!r}: {e}") from None
    if diff == "intermediate":
        split = "validation" if stable_fraction(stem, f"meddx-{seed}") < val_fraction else "train"
    else:
        split = "test"
    return MCQuestion(id=f"meddx-{index}", question=stem, options=options, answer=answer, split=split,
                      meta={"difficulty": diff, "sim_level_std": float(rec["sim_level_std"]), "index": index})


def parse_meddx(records: list, *, val_fraction: float = 0.2, seed: int = 0,
                source: str = "MedDDx") -> tuple[list[MCQuestion], list[ParseIssue]]:
    """All well-formed questions and the (index, reason) of every skipped record."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    questions, issues = [], []
    for i, rec in enumerate(records):
        try:
            questions.append(parse_record(rec, i, val_fraction=val_fraction, seed=seed))
        except (MalformedRecord, ValueError) as e:  # MCQuestion's own checks raise ValueError
            issues.append(ParseIssue(i, str(e)))
    report_issues(source, issues, len(records))
    return questions, issues


def default_meddx_path() -> Path | None:
    return shared_data_path("qa", "MedDDx.json")


def read_meddx_records(path: str | Path | None = None, hf_id: str | None = None, hf_split: str = "train") -> list:
    """Raw records from a local JSON (list of objects, or JSON lines) or a Hugging Face dataset id."""
    if hf_id is not None:
        try:
            import datasets
        except ImportError as e:  # pragma: no cover - datasets is a core dependency
            raise ImportError("loading MedDDx by Hugging Face id needs `pip install datasets`") from e
        return [dict(r) for r in datasets.load_dataset(hf_id, split=hf_split)]
    path = Path(path) if path is not None else default_meddx_path()
    if path is None:
        raise FileNotFoundError("no MedDDx path given and ../shared/data/qa/MedDDx.json is absent; "
                                "pass path= (the published MedDDx.json) or hf_id=")
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = [json.loads(line) for line in text.splitlines() if line.strip()]
    if isinstance(data, dict):  # {"data": [...]} style wrappers
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise ValueError(f"{path}: expected a list of records")
        data = lists[0]
    return data


def load_meddx(path: str | Path | None = None, *, split: str | None = None, hf_id: str | None = None,
               val_fraction: float = 0.2, seed: int = 0) -> list[MCQuestion]:
    """MedDDx questions; `split` filters by split ("train", "validation", "test") or difficulty
    ("basic", "intermediate", "expert"); None or "all" keeps everything."""
    records = read_meddx_records(path, hf_id)
    questions, _ = parse_meddx(records, val_fraction=val_fraction, seed=seed, source=str(path or hf_id or "MedDDx"))
    return filter_split(questions, split)

