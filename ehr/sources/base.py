"""What every source converter shares: options, the bad-row ledger, and the extract step.

A converter reads its tables through `Context.read` (declarative `TableSpec`s), adds its own
checks with `add_reason`, and calls `Context.settle`: the table is written once to the work
directory (a streaming sink: bounded memory), the rows flagged `_reason` are counted per
reason and dropped, rows flagged `_note` are counted and kept, and the good rows come back
as a lazy scan. Converters return *stage-1 events*: lazy frames with the MEDS columns plus
`_family` / `_raw` (source code to map), `_ndc`, `admission_id` (the source's stay id), and the tie-break at equal times: `_stay`
(start of the hospital stay the event belongs to) then `_order`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from ehr.sources.codes import CodeResolver
from ehr.sources.tables import NOTE, REASON, ROW_HASH, SourceTableError, TableSpec, parse_table, require_table, find_table, scan_text_csv

# Ties at one time sort by the start of the event's hospital stay (`_stay`; the event's own
# time when it belongs to none), so a stay that ends at t comes before one that starts at t,
# then by `_order`: birth, admission, ICU discharge (a unit stay ending at t ends before the
# next unit stay of the same hospital stay starts), ICU admission, clinical codes, discharge,
# death; then by code. Output is deterministic. (A zero-length ICU stay sorts discharge first.)
ORDER = {"birth": 0, "admission": 1, "icu_discharge": 2, "icu_admission": 3, "clinical": 4,
         "discharge": 5, "death": 6}
STAGE1_SCHEMA = {
    "subject_id": pl.Int64, "time": pl.Datetime("us"), "code": pl.String, "numeric_value": pl.Float32,
    "text_value": pl.String, "_family": pl.String, "_raw": pl.String, "_ndc": pl.String, "_stay": pl.Datetime("us"), "_order": pl.Int64,
    "admission_id": pl.Int64,
}


@dataclass
class Ledger:
    """Rows skipped (or kept with a note) per dataset, table and reason."""

    rows: list[dict] = field(default_factory=list)

    def add(self, dataset: str, table: str, reason: str, n: int, action: str = "skipped") -> None:
        if n:
            self.rows.append({"dataset": dataset, "table": table, "reason": reason, "rows": int(n),
                              "action": action})

    def frame(self) -> pl.DataFrame:
        schema = {"dataset": pl.String, "table": pl.String, "reason": pl.String, "rows": pl.Int64,
                  "action": pl.String}
        if not self.rows:
            return pl.DataFrame(schema=schema)
        tables = list(dict.fromkeys(r["table"] for r in self.rows))   # in order of first appearance
        action_rank = {"skipped": 0, "kept": 1, "noted": 2}
        return (pl.DataFrame(self.rows, schema=schema)
                .group_by(["dataset", "table", "reason", "action"], maintain_order=True)
                .agg(pl.col("rows").sum())
                .with_columns(pl.col("table").replace_strict(tables, list(range(len(tables)))).alias("_t"),
                              pl.col("action").replace_strict(action_rank, default=3).alias("_a"))
                .sort(["_t", "_a", "rows"], descending=[False, False, True], maintain_order=True)
                .select(list(schema)))

    def skipped(self, table: str | None = None) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rows:
            if r["action"] == "skipped" and (table is None or r["table"] == table):
                out[r["reason"]] = out.get(r["reason"], 0) + r["rows"]
        return out


@dataclass
class Context:
    dataset: str
    root: Path
    workdir: Path
    resolver: CodeResolver
    ledger: Ledger = field(default_factory=Ledger)
    eicu_icd: str = "both"      # eICU fields holding ICD-9 and ICD-10: "both" | "icd9" | "icd10"
    extra_codes: pl.DataFrame | None = None   # an imported MEDS dataset's own codes.parquet
    progress: bool = False
    _bar: object = None
    _paths: dict = field(default_factory=dict)

    def read(self, name: str, spec: TableSpec) -> pl.LazyFrame | None:
        """The parsed table (with `_reason` / `_note`), or None for an absent optional table."""
        path = require_table(self.root, spec.file, self.dataset) if spec.required else find_table(self.root, spec.file)
        if path is None:
            self.ledger.add(self.dataset, name, f"table absent ({spec.file}.csv[.gz])", 1, action="noted")
            return None
        self._paths[name] = path
        notes: list[tuple[str, str]] = []
        lf = parse_table(scan_text_csv(path, self.workdir / "decompressed"), spec, notes)
        for _, text in notes:
            self.ledger.add(self.dataset, name, text, 1, action="noted")
        return lf

    def settle(self, lf: pl.LazyFrame, name: str) -> pl.LazyFrame:
        """Write the flagged table once (streaming), flag duplicate rows, count reasons and
        notes, return the good rows as a lazy scan."""
        path = self.workdir / "tables" / f"{name}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.progress and self._bar is None:
            from tqdm.auto import tqdm
            self._bar = tqdm(desc=f"{self.dataset}: read tables", unit=" table")
        if self._bar is not None:
            self._bar.set_postfix_str(name)
        try:
            lf.sink_parquet(path)
        except pl.exceptions.ComputeError as e:
            src = self._paths.get(name, name)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise SourceTableError(
                f"{self.dataset}: {src}: not a readable CSV table ({first}); fix: repair the file (a row with "
                "more fields than the header is usually an unquoted comma: quote that field) and run again") from None
        if self._bar is not None:
            self._bar.update(1)
        scan = pl.scan_parquet(path)
        if ROW_HASH in scan.collect_schema().names():
            # only the 8-byte hashes are held in memory, never the table
            hashes = scan.select(ROW_HASH).collect().to_series()
            dup_rows = (~hashes.is_first_distinct()).arg_true().cast(pl.UInt32)
            scan = scan.with_row_index("_i").with_columns(
                # a repeated row is counted as a repeat, whatever else is wrong with it (that was
                # counted on its first occurrence); blank lines stay "empty row"
                pl.when(pl.col("_i").is_in(dup_rows.implode()) & (pl.col(REASON) != "empty row").fill_null(True))
                .then(pl.lit("duplicate row")).otherwise(pl.col(REASON)).alias(REASON)).drop("_i", ROW_HASH)
        counts = (scan.group_by(REASON, NOTE).agg(pl.len().alias("n"))
                  .collect().sort([REASON, NOTE], nulls_last=True))
        for reason, note, n in counts.iter_rows():
            if reason is not None:
                self.ledger.add(self.dataset, name, reason, n)
            elif note is not None:
                self.ledger.add(self.dataset, name, note, n, action="kept")
        return scan.filter(pl.col(REASON).is_null()).drop(REASON, NOTE)


def stage1(lf: pl.LazyFrame, *, subject="subject_id", time, code=None, order: str = "clinical",
           family=None, raw=None, text=None, ndc=None, stay=None, admission_id=None) -> pl.LazyFrame:
    """Shape a frame into stage-1 events. Arguments are column names or expressions;
    `admission_id`: the source's id of the hospital stay the row belongs to (null: none)."""
    def ex(v, dtype):
        if v is None:
            return pl.lit(None, dtype=dtype)
        return (pl.col(v) if isinstance(v, str) else v).cast(dtype)
    return lf.select(
        ex(subject, pl.Int64).alias("subject_id"), ex(time, pl.Datetime("us")).alias("time"),
        ex(code, pl.String).alias("code"), pl.lit(None, dtype=pl.Float32).alias("numeric_value"),
        ex(text, pl.String).alias("text_value"), ex(family, pl.String).alias("_family"),
        ex(raw, pl.String).alias("_raw"), ex(ndc, pl.String).alias("_ndc"),
        ex(stay, pl.Datetime("us")).alias("_stay"), pl.lit(ORDER[order], dtype=pl.Int64).alias("_order"),
        ex(admission_id, pl.Int64).alias("admission_id"))


def end_of_day_rule(date: pl.Expr, disch: pl.Expr) -> pl.Expr:
    """A date without a time -> 23:59:59 that day, or the stay's discharge time when it falls
    on the discharge day. The stamp is never earlier than what it records could have happened
    (a drug started "on day d" is visible from the end of day d), so a prediction made during
    day d cannot see it; on the admission day that is still after the admission time."""
    eod = date.dt.truncate("1d") + pl.duration(hours=23, minutes=59, seconds=59)
    return pl.when(date.dt.date() == disch.dt.date()).then(pl.min_horizontal(eod, disch)).otherwise(eod)
