"""Any other code system from user files: a CSV/TSV (optionally .gz) or parquet with code,
description, parents; a MEDS `metadata/codes.parquet` (`code`, `description`, `parent_codes`);
MIMIC `d_icd_*` tables.

Bad rows never stop a build: each one (unreadable CSV row such as an unterminated quote or too
many fields, bytes that are not UTF-8, missing or malformed code, missing description) is
logged with its data-row number (0-based) and file line (1-based), counted in
`SourceTable.skipped` and skipped; the rows around it are kept. Only a file that cannot be read
at all (no `code` / `description` column, not a CSV / parquet / gzip) raises `CodeFileError`.

The CSV reader here (`read_csv_table`, `decode_text`) is also what `qa.datasets` uses for
multiple-choice CSVs, so both report bad rows the same way.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from medtok.codes.normalize import canonical_system, normalize_code, split_code_id
from medtok.codes.sources.base import SourceTable, rows_frame

log = logging.getLogger(__name__)

# a quoted field may span lines (descriptions with line breaks); a row running over this many
# lines is an unterminated quote: it is reported and reading restarts on the line after it
MAX_ROW_LINES = 1000
_LINE_END = re.compile(r"(?<=\n)|(?<=\r)(?!\n)")  # split after \n, \r\n or a lone \r
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_SYSTEM_NAME = re.compile(r"^[A-Z0-9][A-Z0-9.]*$")  # what canonical_system yields for a usable name
_UNDECODABLE = "medtok.undecodable"
# surrogateescape only exists for byte codecs; this marks any undecodable input with a lone surrogate
codecs.register_error(_UNDECODABLE, lambda e: ("\udcfd", e.end))


class CodeFileError(ValueError):
    """A user code file that cannot be read at all (bad rows are skipped, not raised)."""


@dataclass(frozen=True)
class BadRow:
    """A row that was skipped: data-row number (0-based, header excluded), file line (1-based;
    None for parquet) and why."""

    row: int
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = f"row {self.row} skipped" + (f" (line {self.line})" if self.line is not None else "")
        return f"{where}: {self.reason}"


# ---- text and CSV --------------------------------------------------------------------------
def decode_text(data: bytes) -> str:
    """Bytes of a text file -> str. UTF-8 (a BOM is dropped) or UTF-16 with a BOM (Excel's
    "Unicode text"). Bytes that are not UTF-8 are kept as lone surrogates (`surrogateescape`)
    so that only the records holding them are rejected (`undecodable`), not the whole file."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors=_UNDECODABLE)
    return data.decode("utf-8-sig", errors="surrogateescape")


def undecodable(text: str) -> bool:
    """Whether `text` holds bytes that were not valid UTF-8 (or a lone surrogate escape)."""
    return bool(_SURROGATE.search(text))


class _RowTooLong(Exception):
    pass


class _Lines:
    """Feeds csv.reader one physical line at a time and remembers where the current row began.

    csv.reader pulls a line only when it needs one and yields a row as soon as a line ends it,
    so after each yield `next_index` is the first line of the next row."""

    def __init__(self, lines: list[str], start: int, max_row_lines: int):
        self.lines, self.next_index, self.row_start, self.max_row_lines = lines, start, start, max_row_lines

    def __iter__(self):
        return self

    def __next__(self) -> str:
        if self.next_index >= len(self.lines):
            raise StopIteration
        if self.next_index - self.row_start >= self.max_row_lines:
            raise _RowTooLong
        self.next_index += 1
        return self.lines[self.next_index - 1]


def read_csv_table(text: str, *, delimiter: str = ",", max_row_lines: int = MAX_ROW_LINES
                   ) -> tuple[list[str] | None, list[tuple[int, list[str]]], list[tuple[int, str]]]:
    """(header, rows, bad) of CSV text. `rows` are (line, fields) with fields padded to the header
    width; `bad` are (line, reason) of rows that could not be read: an unterminated or stray quote,
    a row over `max_row_lines` lines, a field over the csv field limit, more fields than the header
    (extra fields that are all empty, as trailing commas leave, are dropped instead). After a bad
    row, reading restarts on the line after the row's first line, so one broken quote costs one
    row, not the rest of the file. Blank rows are ignored; header None means no header was read."""
    lines = [ln for ln in _LINE_END.split(text) if ln]
    header: list[str] | None = None
    rows: list[tuple[int, list[str]]] = []
    bad: list[tuple[int, str]] = []
    pos = 0
    while pos < len(lines):
        feed = _Lines(lines, pos, max_row_lines)
        reader = csv.reader(feed, delimiter=delimiter, strict=True)
        restart = None
        try:
            for fields in reader:
                start, n_lines = feed.row_start, feed.next_index - feed.row_start
                feed.row_start = feed.next_index
                if not any(f.strip() for f in fields):
                    continue
                if header is None:
                    header = [f.strip() for f in fields]
                    continue
                if len(fields) > len(header):
                    if any(f.strip() for f in fields[len(header):]):
                        bad.append((start + 1, f"{len(fields)} fields, the header has {len(header)}"))
                        if n_lines > 1:  # a stray quote may have swallowed the next lines: reread them
                            restart = start + 1
                            break
                        continue
                    fields = fields[: len(header)]
                rows.append((start + 1, fields + [""] * (len(header) - len(fields))))
        except _RowTooLong:
            bad.append((feed.row_start + 1, f"unterminated quote: the row runs over {max_row_lines} lines"))
            restart = feed.row_start + 1
        except csv.Error as e:
            msg = str(e)
            if "unexpected end of data" in msg:
                msg = "unterminated quote (the quoted field runs to the end of the file)"
            elif "expected after" in msg:  # a quote closed somewhere a field cannot end
                msg = f"unterminated or stray quote ({msg})"
            bad.append((feed.row_start + 1, msg))
            restart = feed.row_start + 1
        if header is None and bad:  # the header itself is unreadable: nothing to align rows to
            return None, [], bad
        if restart is None:
            break
        pos = restart
    return header, rows, bad


# ---- code files ----------------------------------------------------------------------------
def _read_frame(data: bytes, name: str) -> tuple[list[str], list[tuple[int | None, dict]], list[tuple[int, str]]]:
    """(columns, [(line, record)], [(line, reason)]) of a CSV/TSV (.gz allowed) or parquet file's bytes."""
    lower = name.lower()
    if lower.endswith(".parquet"):
        try:
            df = pd.read_parquet(io.BytesIO(data))
        except Exception as e:  # pyarrow raises several types for a damaged file
            raise CodeFileError(f"{name}: not a readable parquet file ({type(e).__name__}: {e})") from None
        return [str(c) for c in df.columns], [(None, r) for r in df.to_dict("records")], []
    if lower.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise CodeFileError(f"{name}: not a readable gzip file ({e})") from None
        lower = lower[:-3]
    header, rows, bad = read_csv_table(decode_text(data), delimiter="\t" if lower.endswith(".tsv") else ",")
    if header is None:
        reason = f" ({bad[0][1]})" if bad else ""
        raise CodeFileError(f"{name}: no header row could be read{reason}")
    # reversed: with duplicate column names the first one wins (as in `cols` below)
    return header, [(line, dict(zip(reversed(header), reversed(fields)))) for line, fields in rows], bad


def _text(v, what: str) -> str:
    """A cell as text: None / NaN -> "", numbers -> their digits; lists, bytes ... are errors."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise ValueError(f"{what} is a {type(v).__name__}, not text")
    return str(v).strip()


def _clip(text: str, limit: int = 40) -> str:
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def _as_list(v) -> list[str]:
    """`a;b` / `a|b` text or a list (parquet) -> list of non-empty strings."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return []
    if isinstance(v, str):
        return [p.strip() for p in v.replace("|", ";").split(";") if p.strip()]
    if isinstance(v, (int, float)):
        return [str(v)]
    try:
        return [str(p).strip() for p in v if p is not None and str(p).strip()]
    except TypeError:
        raise ValueError(f"list field is a {type(v).__name__}") from None


def _code_row(r: dict, cols: dict[str, str], system: str | None) -> dict:
    """One vocabulary row from a file record; ValueError(reason) when it is unusable."""
    def cell(name, *alts):
        for key in (name, *alts):
            if key in cols:
                v = r.get(cols[key])
                if isinstance(v, str) and undecodable(v):
                    raise ValueError(f"{key} holds bytes that are not UTF-8")
                return v
        return None

    raw = _text(cell("code"), "code")
    if "//" in raw and ":" not in raw:  # MEDS codes look like "ICD10CM//E11.9"
        raw = raw.replace("//", ":", 1)
    sys_in, code = split_code_id(raw)
    sys_ = canonical_system(_text(cell("system"), "system") or sys_in or system or "")
    desc = _text(cell("description"), "description")
    if not raw:
        raise ValueError("no code")
    if not sys_:
        raise ValueError(f"code {_clip(raw)} has no system (no `system` column, `SYSTEM:` prefix or system argument)")
    if not _SYSTEM_NAME.match(sys_):
        raise ValueError(f"malformed system name {_clip(sys_)} (letters, digits and dots only)")
    norm = normalize_code(code, sys_)
    if not norm:
        raise ValueError(f"malformed {sys_} code {_clip(code)}")
    if not desc or desc.lower() == "nan":
        raise ValueError(f"code {_clip(raw)} has no description")
    parents = []
    for p in _as_list(cell("parents", "parent_codes")):
        psys, pcode = split_code_id(p.replace("//", ":", 1))
        psys = psys or sys_
        pnorm = normalize_code(pcode, psys)
        if pnorm:
            parents.append(f"{psys}:{pnorm}")
    synonyms = _as_list(cell("synonyms"))
    return dict(code_id=f"{sys_}:{norm}", system=sys_, code=norm, description=desc, parents=parents,
                synonyms=synonyms, kind="code")


def parse_code_bytes(data: bytes, name: str, system: str | None = None) -> tuple[SourceTable, list[BadRow]]:
    """The codes of a code file's bytes and every skipped row (see the module doc); `name` (the
    file name) gives the format: `.parquet`, else CSV (`.tsv`: tab-separated; `.gz`: compressed).
    Columns understood: `code` (may carry a `SYSTEM:` prefix, MEDS-style `SYSTEM//CODE` too),
    `system` (else the `system` argument), `description`, `parents`/`parent_codes` (`;`-separated
    or a list), `synonyms`. MIMIC `d_icd_diagnoses`/`d_icd_procedures` are recognised by their
    `icd9_code`, `long_title` columns."""
    columns, records, unreadable = _read_frame(data, name)
    cols = {c.strip().lower(): c for c in reversed(columns)}  # first of duplicate names wins
    if "icd9_code" in cols and "long_title" in cols:  # MIMIC-III d_icd_* tables
        cols = {"code": cols["icd9_code"], "description": cols["long_title"]}
        system = "ICD9PCS" if "procedure" in name else "ICD9CM"
    for needed in ("code", "description"):
        if needed not in cols:
            raise CodeFileError(f"{name}: no {needed!r} column (columns: {_clip(str(columns), 200)})")
    # rows in file order, unreadable ones included, so row numbers match what a user counts
    items = sorted([(line, rec, None) for line, rec in records] + [(line, None, why) for line, why in unreadable],
                   key=lambda x: -1 if x[0] is None else x[0])
    rows, bad = [], []
    for i, (line, rec, why) in enumerate(items):
        if why is None:
            try:
                rows.append(_code_row(rec, cols, system))
                continue
            except ValueError as e:
                why = str(e)
        bad.append(BadRow(i, line, why))
    for b in bad:
        log.warning("%s %s", name, b)
    if bad:
        log.warning("%s: %d bad rows skipped, %d kept", name, len(bad), len(rows))
    return SourceTable(f"file:{name}", rows_frame(rows), skipped=len(bad)), bad


def read_code_file(path: str | Path, system: str | None = None) -> tuple[SourceTable, list[BadRow]]:
    """`parse_code_bytes` of the file at `path`."""
    path = Path(path)
    return parse_code_bytes(path.read_bytes(), path.name, system)


def load_code_file(path: str | Path, system: str | None = None) -> SourceTable:
    """`read_code_file` without the list of skipped rows (they are logged and counted)."""
    return read_code_file(path, system)[0]
