"""Source tables as declarative data: where each table lives, which columns it gives, and
how each column is parsed. One generic reader turns a CSV into a typed lazy frame plus a
`_reason` column (why a row is skipped) and a `_note` column (an anomaly kept as is).

Rules shared by every dataset:
- file names are matched case-insensitively, with `.csv` or `.csv.gz` (MIMIC-III ships
  `ADMISSIONS.csv.gz`, the demos `admissions.csv.gz`); column names are lower-cased;
- every column is read as text, then parsed: an id that is empty or not an integer skips the
  row ("missing <col>" / "unparseable <col>"); a required time the same; an optional time
  that does not parse becomes null and is noted;
- a row identical to an earlier one in every source column except the row-id columns is a
  "duplicate row" and skipped (compared by a 64-bit hash of those columns: for 17 million
  rows the chance that any two different rows share a hash is about 1e-5);
- a missing *required table* raises `MissingTableError` naming the dataset and the file; a
  missing column is reported: an optional column becomes null (noted), a required one skips
  all the table's rows (reason "missing column <col>") and the run goes on.
"""

from __future__ import annotations

import gzip
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

REASON, NOTE, ROW_HASH = "_reason", "_note", "_row_hash"
DUP_HASH_SEED = 20240611
DATETIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M",
                    "%Y-%m-%d")
DATE_FORMATS = ("%Y-%m-%d", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S")
# .csv.gz files above this size are decompressed to the work directory in a stream first, so
# the lazy CSV scan reads them in bounded memory (polars decompresses .gz wholly in memory)
GZ_INLINE_LIMIT = 64 << 20
KINDS = ("str", "id", "int", "datetime", "date", "const")


class MissingTableError(FileNotFoundError):
    """A required source table is absent; the message names the dataset and the file."""


class SourceTableError(ValueError):
    """A source table that cannot be read as CSV; the message names the file and the fix."""


@dataclass(frozen=True)
class Col:
    """One column a converter uses: `source` column name (lower case) and how to parse it.

    kind: "str" (text, stripped, empty -> null), "id" (int64), "int", "datetime", "date"
    (date only: the converter applies the date rule), "const" (`const`, no source column).
    required: the row is skipped when the value is missing or does not parse, and a file
    lacking the column has all its rows skipped; a column that is not required may be absent
    (then null, noted). An "id" column is always required.
    """

    source: str | None
    kind: str = "str"
    required: bool = False
    const: str | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Col kind must be one of {KINDS}, got {self.kind!r}")
        if (self.kind == "const") != (self.source is None):
            raise ValueError("a const column has no source; every other column has one")


@dataclass(frozen=True)
class TableSpec:
    """A source table: path stem under the dataset root, canonical column -> Col."""

    file: str
    columns: dict[str, Col]
    required: bool = True
    row_id_columns: tuple[str, ...] = ("row_id",)   # ignored when looking for duplicate rows
    extra_formats: tuple[str, ...] = field(default=())


def find_table(root: str | Path, stem: str) -> Path | None:
    """`root/stem.csv` or `.csv.gz`, every path part matched case-insensitively."""
    here = Path(root)
    parts = stem.split("/")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        wanted = {f"{part}.csv".lower(), f"{part}.csv.gz".lower()} if last else {part.lower()}
        if not here.is_dir():
            return None
        hits = sorted(p for p in here.iterdir() if p.name.lower() in wanted)
        if not hits:
            return None
        # prefer the plain .csv when both exist (it is the faster one to scan)
        here = sorted(hits, key=lambda p: (p.suffix == ".gz", p.name))[0]
    return here


def require_table(root: str | Path, stem: str, dataset: str) -> Path:
    path = find_table(root, stem)
    if path is None:
        raise MissingTableError(
            f"{dataset}: required table '{stem}' not found: expected {Path(root) / stem}.csv or "
            f"{Path(root) / stem}.csv.gz (file names are matched case-insensitively)")
    return path


def scan_text_csv(path: Path, workdir: Path | None = None) -> pl.LazyFrame:
    """Lazy scan with every column as text and lower-cased column names."""
    if path.name.lower().endswith(".gz") and workdir is not None and path.stat().st_size > GZ_INLINE_LIMIT:
        plain = Path(workdir) / (path.name[:-3] + ".decompressed")
        if not plain.exists():
            plain.parent.mkdir(parents=True, exist_ok=True)
            tmp = plain.with_suffix(".tmp")
            with gzip.open(path, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
            tmp.replace(plain)
        path = plain
    lf = pl.scan_csv(path, infer_schema=False)
    names = lf.collect_schema().names()
    return lf.rename({c: c.strip().lower() for c in names if c != c.strip().lower()})


def _parse_time(col: str, formats) -> pl.Expr:
    s = pl.col(col).str.strip_chars()
    return pl.coalesce([s.str.strptime(pl.Datetime("us"), f, strict=False, exact=True) for f in formats])


def _first_reason(pairs: list[tuple[pl.Expr, str]]) -> pl.Expr:
    """The first reason whose condition holds, else null."""
    if not pairs:
        return pl.lit(None, dtype=pl.String)
    expr = pl.when(pairs[0][0]).then(pl.lit(pairs[0][1]))
    for cond, reason in pairs[1:]:
        expr = expr.when(cond).then(pl.lit(reason))
    return expr.otherwise(pl.lit(None, dtype=pl.String))


def parse_table(lf: pl.LazyFrame, spec: TableSpec, notes: list[tuple[str, str]]) -> pl.LazyFrame:
    """Typed canonical columns + `_reason` / `_note`. `notes` collects (column, text) for
    columns that are missing from the file (reported by the caller with the row counts)."""
    present = set(lf.collect_schema().names())
    reasons: list[tuple[pl.Expr, str]] = []
    kept: list[tuple[pl.Expr, str]] = []
    # duplicates over every source column but the row ids (computed on the raw text)
    dup_cols = [c for c in lf.collect_schema().names() if c not in spec.row_id_columns]
    missing_required = []
    exprs = []
    for name, col in spec.columns.items():
        if col.kind == "const":
            exprs.append(pl.lit(col.const).alias(name))
            continue
        if col.source not in present:
            if col.required or col.kind == "id":
                missing_required.append(col.source)
            else:
                notes.append((col.source, f"missing column {col.source} (set null)"))
            exprs.append(pl.lit(None, dtype=_dtype(col.kind)).alias(name))
            continue
        raw = pl.col(col.source).str.strip_chars()
        empty = raw.is_null() | (raw == "")
        if col.kind == "str":
            parsed = pl.when(empty).then(None).otherwise(raw)
        elif col.kind in ("id", "int"):
            parsed = raw.cast(pl.Int64, strict=False)
        else:
            fmts = (DATE_FORMATS if col.kind == "date" else DATETIME_FORMATS) + spec.extra_formats
            parsed = _parse_time(col.source, fmts)
            if col.kind == "date":
                parsed = parsed.dt.truncate("1d")
        bad = ~empty & parsed.is_null()
        if col.required or col.kind == "id":
            reasons.append((empty, f"missing {col.source}"))
            reasons.append((bad, f"unparseable {col.source}"))
        elif col.kind != "str":
            kept.append((bad, f"unparseable {col.source} (set null)"))
        exprs.append(parsed.alias(name))
    if missing_required:
        reasons.insert(0, (pl.lit(True), "missing column " + ", ".join(missing_required)))
    all_cols = lf.collect_schema().names()
    blank = pl.all_horizontal([pl.col(c).is_null() | (pl.col(c).str.strip_chars() == "") for c in all_cols])
    reasons.insert(0, (blank, "empty row"))
    # a row-wise hash (streams); `Context.settle` flags repeats of a hash after the sink, so
    # the table never has to sit in memory for the duplicate check
    row_hash = pl.struct(dup_cols).hash(DUP_HASH_SEED) if dup_cols else pl.lit(None, dtype=pl.UInt64)
    return lf.select(exprs + [_first_reason(reasons).alias(REASON), _first_reason(kept).alias(NOTE),
                              row_hash.alias(ROW_HASH)])


def _dtype(kind: str) -> pl.DataType:
    return {"str": pl.String, "id": pl.Int64, "int": pl.Int64, "datetime": pl.Datetime("us"),
            "date": pl.Datetime("us"), "const": pl.String}[kind]


def add_reason(lf: pl.LazyFrame, bad: pl.Expr, reason: str) -> pl.LazyFrame:
    """Set `_reason` where `bad` holds and no earlier reason was set."""
    return lf.with_columns(
        pl.when(pl.col(REASON).is_null() & bad.fill_null(False)).then(pl.lit(reason))
        .otherwise(pl.col(REASON)).alias(REASON))


def add_note(lf: pl.LazyFrame, cond: pl.Expr, note: str) -> pl.LazyFrame:
    return lf.with_columns(
        pl.when(pl.col(NOTE).is_null() & cond.fill_null(False)).then(pl.lit(note))
        .otherwise(pl.col(NOTE)).alias(NOTE))
