"""Any other code system from user files: a CSV/TSV (optionally .gz) or parquet with code,
description, parents; a MEDS `metadata/codes.parquet` (`code`, `description`, `parent_codes`);
MIMIC `d_icd_*` tables.

Bad rows never stop a build: each one (unreadable CSV row such as an unterminated quote or too
many fields, bytes that are not UTF-8, missing or malformed code, missing description) is
logged with its data-row number (0-based) and file line (1-based), counted in
`SourceTable.skipped` and skipped; the rows around it are kept. Only a file that cannot be read
at all (no `code` / `description` column, not a CSV / parquet / gzip) raises `CodeFileError`.

The CSV reader (`medbase.csv_files`: `read_csv_table`, `decode_text`) is shared with `qa.datasets`
for multiple-choice CSVs, so both report bad rows the same way.
"""

from __future__ import annotations

import gzip
import io
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from medbase.csv_files import decode_text, read_csv_table, undecodable
from medtok.codes.normalize import canonical_system, normalize_code, split_code_id
from medtok.codes.sources.base import SourceTable, rows_frame

log = logging.getLogger(__name__)

_SYSTEM_NAME = re.compile(r"^[A-Z0-9][A-Z0-9.]*$")  # what canonical_system yields for a usable name


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
