"""MedDDx: differential-diagnosis multiple choice (the set MedTok fine-tunes and tests on).

The published JSON is a list of `{query, answer, sim_level_std}`: `query` holds the question
followed by option lines `A: ...` .. `D: ...`, `answer` is the letter, and `sim_level_std`
(spread of the options' semantic similarity) gives the difficulty by its authors' rule:
> 0.04 Basic, < 0.02 Expert, otherwise Intermediate (245 / 1,041 / 483 questions).

Splits as in the paper: Intermediate is fine-tuning data, divided deterministically into
train / validation (by a hash of the question text, so the split does not depend on record
order); Basic and Expert are test sets. Each question gets `split` in
{"train", "validation", "test"} and `meta["difficulty"]` in {"basic", "intermediate", "expert"};
`meta["query"]` keeps the published text (stem + option lines) for tools that read it whole,
such as the linker's MedDDx coverage.

This module is the one MedDDx parser: malformed records (and lines of a JSON-lines copy that
are not JSON) are reported with their index and skipped (qa.datasets.common).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from medbase.paths import shared_data_path
from qa.datasets.common import (MalformedRecord, ParseIssue, filter_split, parse_letter, parse_records,
                                read_json_records, read_text, resolve_answer, show, stable_fraction)
from qa.types import LETTERS, MCQuestion

BASIC_ABOVE = 0.04
EXPERT_BELOW = 0.02
DIFFICULTIES = ("basic", "intermediate", "expert")
_OPTION_RE = re.compile(r"^\s*([A-J])\s*:\s?(.*?)\s*$")


def difficulty(sim_level_std: float) -> str:
    """The MedDDx authors' rule: > 0.04 basic, < 0.02 expert, else intermediate."""
    if isinstance(sim_level_std, bool):
        raise ValueError("sim_level_std is a bool, not a number")
    s = float(sim_level_std)  # OverflowError for integers beyond float range
    if not math.isfinite(s) or s < 0:
        raise ValueError(f"sim_level_std must be a finite number >= 0 (a spread), got {s}")
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
        raise MalformedRecord(f"answer {show(rec['answer'])} is not an option letter")
    answer = resolve_answer(rec["answer"], options)
    try:
        diff = difficulty(rec["sim_level_std"])
    except (TypeError, ValueError, OverflowError) as e:
        raise MalformedRecord(f"bad sim_level_std {show(rec['sim_level_std'])}: {e}") from None
    if diff == "intermediate":
        split = "validation" if stable_fraction(stem, f"meddx-{seed}") < val_fraction else "train"
    else:
        split = "test"
    rid = rec.get("id")  # only present when the file maps ids to records; published MedDDx has none
    if isinstance(rid, (dict, list)):
        raise MalformedRecord(f"id is a {type(rid).__name__}, not text")
    return MCQuestion(id=str(rid) if rid not in (None, "") else f"meddx-{index}", question=stem, options=options,
                      answer=answer, split=split, meta={"difficulty": diff, "sim_level_std": float(rec["sim_level_std"]),
                                                        "index": index, "query": rec["query"]})


def parse_meddx(records: list, *, val_fraction: float = 0.2, seed: int = 0, source: str = "MedDDx",
                lines: list[int | None] | None = None) -> tuple[list[MCQuestion], list[ParseIssue]]:
    """All well-formed questions and the (index, line, reason) of every skipped record."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    return parse_records(records, lambda rec, i: parse_record(rec, i, val_fraction=val_fraction, seed=seed),
                         source=source, lines=lines)


def default_meddx_path() -> Path | None:
    return shared_data_path("qa", "MedDDx.json")


def read_meddx_text(text: str, source: str = "MedDDx") -> tuple[list, list[int | None] | None]:
    """(records, lines) of a MedDDx file's text: a JSON list, {"data": [...]}, an id -> record
    object, or JSON lines (a line that is not JSON is a skipped record, not a crash)."""
    return read_json_records(text, source, record_keys=("query",))


def read_meddx_records(path: str | Path | None = None, hf_id: str | None = None, hf_split: str = "train") -> list:
    """Raw records from a local JSON (see `read_meddx_text`) or a Hugging Face dataset id."""
    return _read(path, hf_id, hf_split)[0]


def _read(path, hf_id, hf_split="train") -> tuple[list, list[int | None] | None]:
    if hf_id is not None:
        try:
            import datasets
        except ImportError as e:  # pragma: no cover - datasets is a core dependency
            raise ImportError("loading MedDDx by Hugging Face id needs `pip install datasets`") from e
        return [dict(r) for r in datasets.load_dataset(hf_id, split=hf_split)], None
    path = Path(path) if path is not None else default_meddx_path()
    if path is None:
        raise FileNotFoundError("no MedDDx path given and ../shared/data/qa/MedDDx.json is absent; "
                                "pass path= (the published MedDDx.json) or hf_id=")
    return read_meddx_text(read_text(Path(path).read_bytes()), str(path))


def parse_meddx_bytes(data: bytes, *, val_fraction: float = 0.2, seed: int = 0,
                      source: str = "MedDDx") -> tuple[list[MCQuestion], list[ParseIssue]]:
    """Questions and skipped records of a MedDDx file's bytes (what `load_meddx` does after reading)."""
    records, lines = read_meddx_text(read_text(data), source)
    return parse_meddx(records, val_fraction=val_fraction, seed=seed, source=source, lines=lines)


def load_meddx(path: str | Path | None = None, *, split: str | None = None, hf_id: str | None = None,
               val_fraction: float = 0.2, seed: int = 0) -> list[MCQuestion]:
    """MedDDx questions; `split` filters by split ("train", "validation", "test") or difficulty
    ("basic", "intermediate", "expert"); None or "all" keeps everything. Raises DatasetFileError
    when the file cannot be read as records at all."""
    records, lines = _read(path, hf_id)
    source = str(path or hf_id or default_meddx_path() or "MedDDx")
    questions, _ = parse_meddx(records, val_fraction=val_fraction, seed=seed, source=source, lines=lines)
    return filter_split(questions, split)
