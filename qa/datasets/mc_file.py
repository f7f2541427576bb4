"""Bring-your-own multiple-choice files: JSON (list of objects), JSON lines, or CSV.

Each record needs a question, its options and the answer. Field names of the common
medical sets are recognised:

    question  "question" | "query" | "stem" | "prompt"
    options   "options" / "choices": a list, a {letter: text} mapping, {"label": [...], "text": [...]},
              or a JSON string of those (CSV);
              or one field per option: "A", "B", ... | "opa", "opb", ... (MedMCQA) | "option_a", ...
    answer    "answer_idx" (MedQA letter) | "answer" | "cop" (MedMCQA) | "label" | "answerKey":
              a letter, an integer index (0-based unless `index_base=1`), or the option text
    split     optional "split" field (else the `split` argument)
    codes     optional "codes" list of code ids
    id        optional "id"; else "<file stem>-<record index>"

Malformed records (missing or empty options, answer not among the options, empty question)
are logged with their index and skipped.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from qa.datasets.common import MalformedRecord, ParseIssue, filter_split, report_issues, resolve_answer
from qa.types import LETTERS, MCQuestion

QUESTION_KEYS = ("question", "query", "stem", "prompt")
OPTION_LIST_KEYS = ("options", "choices")
ANSWER_KEYS = ("answer_idx", "answer", "cop", "label", "answerKey", "answer_index")
# per-option column families, tried in order
OPTION_COLUMN_FAMILIES = (
    [c for c in LETTERS],
    [f"op{c}" for c in "abcdefghij"],
    [f"option_{c}" for c in "abcdefghij"],
    [f"option{c}" for c in LETTERS],
)


def _is_missing(v) -> bool:
    return v is None or (isinstance(v, float) and v != v) or (isinstance(v, str) and not v.strip())


def _first(rec: dict, keys) -> tuple[str | None, object]:
    for k in keys:
        if k in rec and not _is_missing(rec[k]):
            return k, rec[k]
    return None, None


def _options(rec: dict) -> list[str]:
    _, opts = _first(rec, OPTION_LIST_KEYS)
    if isinstance(opts, str):
        try:
            opts = json.loads(opts)
        except json.JSONDecodeError:
            raise MalformedRecord("options field is text but not a JSON list/object") from None
    if isinstance(opts, dict):
        if "text" in opts and isinstance(opts["text"], list):  # HF {"label": [...], "text": [...]}
            opts = list(opts["text"])
        else:
            keys = sorted(opts, key=lambda k: str(k).upper())
            letters = "".join(str(k).upper() for k in keys)
            if letters != LETTERS[: len(keys)]:
                raise MalformedRecord(f"option keys {keys} do not run A, B, C, ...")
            opts = [opts[k] for k in keys]
    if opts is None:
        for family in OPTION_COLUMN_FAMILIES:
            present = [c for c in family if c in rec and not _is_missing(rec[c])]
            if present:
                if present != family[: len(present)]:
                    raise MalformedRecord(f"option columns {present} have gaps")
                opts = [rec[c] for c in present]
                break
    if opts is None:
        raise MalformedRecord("missing options")
    if not isinstance(opts, list):
        raise MalformedRecord(f"options are {type(opts).__name__}, not a list")
    opts = [str(o).strip() if not _is_missing(o) else "" for o in opts]
    if any(not o for o in opts):
        raise MalformedRecord(f"empty option(s) {', '.join(LETTERS[i] for i, o in enumerate(opts) if not o)}")
    if len(opts) < 2:
        raise MalformedRecord(f"needs at least 2 options, found {len(opts)}")
    if len(opts) > len(LETTERS):
        raise MalformedRecord(f"more than {len(LETTERS)} options")
    return opts


def parse_record(rec, index: int, *, stem: str = "mc", split: str = "test", index_base: int = 0) -> MCQuestion:
    if not isinstance(rec, dict):
        raise MalformedRecord(f"record is {type(rec).__name__}, not an object")
    _, question = _first(rec, QUESTION_KEYS)
    if question is None:
        raise MalformedRecord("empty question")
    options = _options(rec)
    key, ans = _first(rec, ANSWER_KEYS)
    if key is None:
        raise MalformedRecord("missing answer")
    answer = resolve_answer(ans, options, index_base=index_base)
    codes = rec.get("codes") or []
    if isinstance(codes, str):
        codes = json.loads(codes) if codes.strip().startswith("[") else [c for c in codes.split(";") if c]
    rid = rec.get("id")
    meta = {k: v for k, v in rec.items() if k not in {*QUESTION_KEYS, *OPTION_LIST_KEYS, key, "id", "split", "codes"}
            and not any(k in fam for fam in OPTION_COLUMN_FAMILIES)}
    meta["index"] = index
    return MCQuestion(id=str(rid) if not _is_missing(rid) else f"{stem}-{index}", question=str(question).strip(),
                      options=options, answer=answer, split=str(rec.get("split") or split), codes=list(codes), meta=meta)


def parse_mc_records(records: list, *, stem: str = "mc", split: str = "test", index_base: int = 0,
                     source: str = "mc_file") -> tuple[list[MCQuestion], list[ParseIssue]]:
    questions, issues = [], []
    for i, rec in enumerate(records):
        try:
            questions.append(parse_record(rec, i, stem=stem, split=split, index_base=index_base))
        except (MalformedRecord, ValueError) as e:
            issues.append(ParseIssue(i, str(e)))
    report_issues(source, issues, len(records))
    return questions, issues


def read_records(path: str | Path) -> list:
    """Records of a .json (list, or {"...": list}), .jsonl or .csv file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    text = path.read_text(encoding="utf-8")
    if suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    try:
        data = json.loads(text)
    except json.JSONDecodeError:  # a .json file holding JSON lines (MedQA ships these)
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise ValueError(f"{path}: expected a list of records (or an object holding exactly one list)")
        data = lists[0]
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of records")
    return data


def load_mc_file(path: str | Path, *, split: str | None = None, default_split: str = "test",
                 index_base: int = 0) -> list[MCQuestion]:
    """Questions from a JSON/JSONL/CSV file; `split` filters (by split or meta difficulty)."""
    path = Path(path)
    records = read_records(path)
    questions, _ = parse_mc_records(records, stem=path.stem, split=default_split, index_base=index_base,
                                    source=str(path))
    return filter_split(questions, split)
