"""What every dataset loader shares: reading record files, malformed-record reporting and
answer resolution.

Skip-and-count convention: a record that cannot be used (a JSON line that is not JSON, a CSV
row with an unterminated quote, bytes that are not UTF-8, a missing field, an answer that is
not among the options, ...) becomes a `ParseIssue` (record index, file line when known, reason),
is logged and skipped; the other records are kept. Only a file that cannot be read as records
at all raises `DatasetFileError`. Every parser raises `MalformedRecord` for one bad record.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Callable

from medbase.csv_files import decode_text, read_csv_table, undecodable
from medbase.hashing import stable_fraction  # noqa: F401  (re-exported: ontology and MedDDx splits)
from qa.types import LETTERS, MCQuestion

log = logging.getLogger("qa.datasets")


@dataclass(frozen=True)
class ParseIssue:
    """A record that was skipped: its position in the source (record index; file line when the
    format has lines) and why."""

    index: int
    reason: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"record {self.index}" + (f" (line {self.line})" if self.line is not None else "")
        return f"{where}: {self.reason}"


class MalformedRecord(ValueError):
    """Raised inside a parser for one record; the loader turns it into a ParseIssue."""


class DatasetFileError(ValueError):
    """A dataset file that cannot be read as records at all (bad records are skipped instead)."""


@dataclass(frozen=True)
class UnreadableRecord:
    """Stands in for an entry of a file that could not be read as a record (a JSON line that is
    not JSON, a CSV row with an unterminated quote, an id mapped to a non-object); parsers turn
    it into a ParseIssue so the record numbering of the rest of the file does not shift."""

    reason: str
    line: int | None = None


def report_issues(source: str, issues: list[ParseIssue], n_total: int) -> None:
    """Log every skipped record (index, line, reason) so nothing disappears silently."""
    if not issues:
        return
    log.warning("%s: skipped %d of %d malformed records", source, len(issues), n_total)
    for issue in issues:
        log.warning("%s: %s", source, issue)


def check_text(rec) -> None:
    """MalformedRecord if any string in `rec` (keys included, any depth) holds bytes that were not
    UTF-8: such text would fail later, far from the file, when it is encoded or tokenized."""
    stack = [rec]
    while stack:  # iterative: a deeply nested record must not hit the recursion limit
        x = stack.pop()
        if isinstance(x, str):
            if undecodable(x):
                raise MalformedRecord("holds bytes that are not valid UTF-8 (or a lone surrogate escape)")
        elif isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())
        elif isinstance(x, (list, tuple)):
            stack.extend(x)


def parse_records(records: list, parse_one: Callable[[object, int], MCQuestion], *, source: str,
                  lines: list[int | None] | None = None) -> tuple[list[MCQuestion], list[ParseIssue]]:
    """`parse_one(record, index)` over `records`, skipping (and reporting) the malformed ones."""
    questions, issues = [], []
    for i, rec in enumerate(records):
        line = lines[i] if lines is not None else None
        if isinstance(rec, UnreadableRecord):
            issues.append(ParseIssue(i, rec.reason, rec.line))
            continue
        try:
            check_text(rec)
            questions.append(parse_one(rec, i))
        except (MalformedRecord, ValueError) as e:  # MCQuestion's own checks raise ValueError
            issues.append(ParseIssue(i, str(e), line))
    report_issues(source, issues, len(records))
    return questions, issues


# ---- reading files -----------------------------------------------------------------------------
def _json_value(text: str):
    """json.loads, with every failure (syntax, numbers over the digit limit, nesting too deep for
    the recursion limit) as ValueError(reason)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None
    except RecursionError:
        raise ValueError("not valid JSON: nested too deeply") from None
    except ValueError as e:  # e.g. an integer over Python's 4,300-digit limit
        raise ValueError(f"not valid JSON: {e}") from None


def read_json_lines(text: str) -> tuple[list, list[int | None]]:
    """(records, lines) of JSON lines; a line that is not JSON becomes an UnreadableRecord."""
    records, lines = [], []
    # split on "\n" only: str.splitlines would also cut at U+2028 and friends, which JSON strings may hold
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            records.append(_json_value(line))
        except ValueError as e:
            records.append(UnreadableRecord(str(e).replace(f" (line 1, column", " (column"), n))
        lines.append(n)
    return records, lines


def _looks_like_json_lines(text: str) -> bool:
    """A text that failed as one JSON document is JSON lines when it starts with an object and
    some line is a complete JSON object on its own (a truncated document is not)."""
    if not text.lstrip().startswith("{"):
        return False
    for line in text.split("\n"):
        if line.strip().startswith("{"):
            try:
                if isinstance(json.loads(line), dict):
                    return True
            except (ValueError, RecursionError):
                pass
    return False


def unwrap_records(data, source: str, record_keys: tuple[str, ...] = ()) -> list:
    """The records inside a parsed JSON document: a list of records; an object holding exactly one
    list ({"data": [...]}); an object mapping ids to records ({"q1": {...}, ...}: the id is kept
    as the record's "id", a differing own "id" moves to "source_id"); or a single record (an
    object with one of `record_keys`)."""
    if isinstance(data, list):
        return data
    if not isinstance(data, dict):
        raise DatasetFileError(f"{source}: expected a list of records or an object, found {type(data).__name__}")
    if any(k in data for k in record_keys):
        return [data]
    lists = [k for k, v in data.items() if isinstance(v, list)]
    if len(lists) == 1:
        return data[lists[0]]
    if not lists and any(isinstance(v, dict) for v in data.values()):
        out = []
        for key, rec in data.items():
            if not isinstance(rec, dict):
                out.append(UnreadableRecord(f"entry {key!r} is {type(rec).__name__}, not a record"))
            elif "id" in rec and str(rec["id"]) != key:
                out.append({**rec, "id": key, "source_id": rec["id"]})
            else:
                out.append({**rec, "id": key})
        return out
    raise DatasetFileError(f"{source}: expected a list of records, an object holding exactly one list, "
                           f"or an object mapping ids to records; found keys {sorted(map(str, data))[:10]}")


def read_json_records(text: str, source: str, *, lines_only: bool = False,
                      record_keys: tuple[str, ...] = ()) -> tuple[list, list[int | None] | None]:
    """(records, lines) of a JSON document or JSON lines text (lines None for a document).
    `lines_only`: the text is JSON lines (.jsonl), bad lines are skipped records."""
    if lines_only:
        return read_json_lines(text)
    if not text.strip():
        return [], None
    try:
        data = _json_value(text)
    except ValueError as e:
        if _looks_like_json_lines(text):  # a .json file holding JSON lines (MedQA ships these)
            return read_json_lines(text)
        raise DatasetFileError(f"{source}: {e}") from None
    return unwrap_records(data, source, record_keys), None


def read_csv_records(text: str, source: str) -> tuple[list, list[int | None]]:
    """(records, lines) of CSV text: one dict per row (header -> cell); rows that cannot be read
    (unterminated quote, too many fields) become UnreadableRecords at their line."""
    header, rows, bad = read_csv_table(text)
    if header is None:
        if not bad:
            return [], []
        raise DatasetFileError(f"{source}: the header row cannot be read (line {bad[0][0]}: {bad[0][1]})")
    items = sorted([(line, dict(zip(reversed(header), reversed(fields)))) for line, fields in rows]
                   + [(line, UnreadableRecord(why, line)) for line, why in bad], key=lambda x: x[0])
    return [rec for _, rec in items], [line for line, _ in items]


def read_text(data: bytes) -> str:
    """File bytes as text (UTF-8, BOM dropped, or UTF-16 with a BOM); undecodable bytes are kept as
    markers so that only the records holding them are rejected (see `check_text`)."""
    return decode_text(data)


_LETTER_RE = re.compile(r"^\s*\(?([A-Ja-j])\s*[\).:]?\s*$")


def parse_letter(value) -> str | None:
    """'C', 'c', '(C)', 'C.', 'C)' -> 'C'; anything else -> None."""
    if not isinstance(value, str):
        return None
    m = _LETTER_RE.match(value)
    return m.group(1).upper() if m else None


def show(value, limit: int = 60) -> str:
    """repr for messages: cut to `limit` characters, safe for integers too long to print."""
    try:
        text = repr(value)
    except ValueError:  # an int over Python's 4,300-digit str() limit
        return f"<{type(value).__name__} too long to print>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def resolve_answer(answer, options: list[str], *, index_base: int = 0) -> int:
    """Index of the correct option from a letter, an integer index (0- or 1-based per
    `index_base`) or the option text itself; raises MalformedRecord when it is none of them."""
    if answer is None or (isinstance(answer, float) and answer != answer):
        raise MalformedRecord("missing answer")
    if isinstance(answer, bool):
        raise MalformedRecord(f"answer {show(answer)} is not a letter, index or option text")
    letter = parse_letter(answer)
    if letter is not None:
        k = LETTERS.index(letter)
        if k >= len(options):
            raise MalformedRecord(f"answer {show(letter)} is not among the {len(options)} options")
        return k
    if isinstance(answer, (int, float)) or (isinstance(answer, str) and answer.strip().isdecimal()):
        if isinstance(answer, float) and not answer.is_integer():  # 1.5, inf
            raise MalformedRecord(f"answer index {show(answer)} is not an integer")
        try:
            k = int(answer.strip() if isinstance(answer, str) else answer) - index_base
        except ValueError:  # a digit string over Python's int-conversion limit
            raise MalformedRecord("answer index has too many digits") from None
        if not 0 <= k < len(options):
            raise MalformedRecord(f"answer index {show(answer)} (base {index_base}) outside the {len(options)} options")
        return k
    if isinstance(answer, str):
        norm = answer.strip().casefold()
        hits = [i for i, o in enumerate(options) if str(o).strip().casefold() == norm]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise MalformedRecord(f"answer text {show(answer)} matches several options")
        raise MalformedRecord(f"answer {show(answer)} is not among the options")
    raise MalformedRecord(f"answer {show(answer)} is not a letter, index or option text")


def filter_split(questions: list[MCQuestion], split: str | None) -> list[MCQuestion]:
    if split in (None, "all"):
        return questions
    split = split.lower()
    keep = [q for q in questions if q.split == split or q.meta.get("difficulty") == split]
    if not keep and questions:
        known = sorted({q.split for q in questions} | {q.meta.get("difficulty") for q in questions} - {None})
        raise ValueError(f"no question has split/difficulty {split!r}; known: {known}")
    return keep
