"""Bring-your-own multiple-choice files: JSON, JSON lines, or CSV.

JSON layouts: a list of records; an object holding one list ({"data": [...]}); an object
mapping question ids to records ({"q1": {...}, ...}, common in public benchmarks: the ids are
kept); or a single record.

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
    id        optional "id" (or the key of an id mapping); else "<file stem>-<record index>"

Malformed records (a JSON line that is not JSON, a CSV row with an unterminated quote or too
many fields, bytes that are not UTF-8, missing or empty options, answer not among the options,
empty question) are logged with their index (and line, for JSON lines and CSV) and skipped;
the good records are kept. A file that cannot be read as records at all raises
`DatasetFileError`.
"""

from __future__ import annotations

import json
from pathlib import Path

from qa.datasets.common import (MalformedRecord, ParseIssue, filter_split, parse_records,
                                read_csv_records, read_json_records, read_text, resolve_answer, show)
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


def _scalar_text(value, what: str) -> str:
    """A question / option as text: strings and numbers; objects and lists are malformed."""
    if isinstance(value, (dict, list, tuple, set)) or isinstance(value, bool):
        raise MalformedRecord(f"{what} is a {type(value).__name__}, not text")
    return str(value).strip() if not _is_missing(value) else ""


def _options(rec: dict) -> list[str]:
    _, opts = _first(rec, OPTION_LIST_KEYS)
    if isinstance(opts, str):
        try:
            opts = json.loads(opts)
        except (ValueError, RecursionError):
            raise MalformedRecord("options field is text but not a JSON list/object") from None
    if isinstance(opts, dict):
        if "text" in opts and isinstance(opts["text"], list):  # HF {"label": [...], "text": [...]}
            opts = list(opts["text"])
        else:
            keys = sorted(opts, key=lambda k: str(k).upper())
            letters = "".join(str(k).upper() for k in keys)
            if letters != LETTERS[: len(keys)]:
                raise MalformedRecord(f"option keys {show(keys)} do not run A, B, C, ...")
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
    if len(opts) > len(LETTERS):
        raise MalformedRecord(f"more than {len(LETTERS)} options")
    opts = [_scalar_text(o, f"option {LETTERS[i]}") for i, o in enumerate(opts)]
    if any(not o for o in opts):
        raise MalformedRecord(f"empty option(s) {', '.join(LETTERS[i] for i, o in enumerate(opts) if not o)}")
    if len(opts) < 2:
        raise MalformedRecord(f"needs at least 2 options, found {len(opts)}")
    return opts


def _codes(value) -> list[str]:
    """Optional code list: a list of strings, a JSON list in text, or `a;b` text."""
    if _is_missing(value):
        return []
    if isinstance(value, str):
        if value.strip().startswith("["):
            try:
                value = json.loads(value)
            except (ValueError, RecursionError):
                raise MalformedRecord("codes field is text but not a JSON list") from None
        else:
            return [c.strip() for c in value.split(";") if c.strip()]
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise MalformedRecord(f"codes must be a list of code ids, got {show(value)}")
    return list(value)


def parse_record(rec, index: int, *, stem: str = "mc", split: str = "test", index_base: int = 0) -> MCQuestion:
    if not isinstance(rec, dict):
        raise MalformedRecord(f"record is {type(rec).__name__}, not an object")
    _, question = _first(rec, QUESTION_KEYS)
    question = _scalar_text(question, "question") if question is not None else ""
    if not question:
        raise MalformedRecord("empty question")
    options = _options(rec)
    key, ans = _first(rec, ANSWER_KEYS)
    if key is None:
        raise MalformedRecord("missing answer")
    answer = resolve_answer(ans, options, index_base=index_base)
    codes = _codes(rec.get("codes"))
    rid, rsplit = rec.get("id"), rec.get("split")
    for name, value in (("id", rid), ("split", rsplit)):
        if isinstance(value, (dict, list)):
            raise MalformedRecord(f"{name} is a {type(value).__name__}, not text")
    meta = {k: v for k, v in rec.items() if k not in {*QUESTION_KEYS, *OPTION_LIST_KEYS, key, "id", "split", "codes"}
            and not any(k in fam for fam in OPTION_COLUMN_FAMILIES)}
    meta["index"] = index
    return MCQuestion(id=str(rid) if not _is_missing(rid) else f"{stem}-{index}", question=question,
                      options=options, answer=answer, split=str(rsplit or split), codes=codes, meta=meta)


def parse_mc_records(records: list, *, stem: str = "mc", split: str = "test", index_base: int = 0,
                     source: str = "mc_file", lines: list[int | None] | None = None
                     ) -> tuple[list[MCQuestion], list[ParseIssue]]:
    """All well-formed questions and the (index, line, reason) of every skipped record."""
    return parse_records(records, lambda rec, i: parse_record(rec, i, stem=stem, split=split, index_base=index_base),
                         source=source, lines=lines)


FORMATS = ("json", "jsonl", "csv")


def file_format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower().lstrip(".")
    return {"ndjson": "jsonl", "tsv": "csv"}.get(suffix, suffix if suffix in FORMATS else "json")


def read_records_text(text: str, fmt: str, source: str = "mc_file") -> tuple[list, list[int | None] | None]:
    """(records, lines) of a file's text in format `fmt` ("json", "jsonl" or "csv")."""
    if fmt == "csv":
        return read_csv_records(text, source)
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    return read_json_records(text, source, lines_only=fmt == "jsonl", record_keys=QUESTION_KEYS)


def read_records(path: str | Path) -> list:
    """Records of a .json, .jsonl or .csv file (unreadable entries as UnreadableRecord)."""
    return read_records_text(read_text(Path(path).read_bytes()), file_format(path), str(path))[0]


def parse_mc_bytes(data: bytes, fmt: str, *, stem: str = "mc", default_split: str = "test", index_base: int = 0,
                   source: str = "mc_file") -> tuple[list[MCQuestion], list[ParseIssue]]:
    """Questions and skipped records of a file's bytes: what `load_mc_file` does after reading."""
    records, lines = read_records_text(read_text(data), fmt, source)
    return parse_mc_records(records, stem=stem, split=default_split, index_base=index_base, source=source,
                            lines=lines)


def load_mc_file(path: str | Path, *, split: str | None = None, default_split: str = "test",
                 index_base: int = 0) -> list[MCQuestion]:
    """Questions from a JSON/JSONL/CSV file; `split` filters (by split or meta difficulty).
    Raises DatasetFileError when the file cannot be read as records at all."""
    path = Path(path)
    questions, _ = parse_mc_bytes(path.read_bytes(), file_format(path), stem=path.stem, default_split=default_split,
                                  index_base=index_base, source=str(path))
    return filter_split(questions, split)
