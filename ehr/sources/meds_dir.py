"""A MEDS directory from elsewhere (MIMIC-IV MEDS, EHRSHOT MEDS, or one of ours) -> stage-1
events with its codes mapped to the project's conventions.

Import rules (`IMPORT_RULES`, applied to each *distinct* code once):
- `DIAGNOSIS//ICD//9//4280` / `DIAGNOSIS//ICD//10//E119` (MIMIC-IV MEDS) and the OMOP-style
  `ICD9CM/428.0`, `ICD10CM/E11.9` (EHRSHOT) -> vocabulary ids (`ICD9CM:428.0`), unmapped ones
  -> `DIAGNOSIS//ICD9//<code>`; procedures likewise (`PROCEDURE//ICD//{9|10}//...`,
  `ICD9Proc/...`, `ICD10PCS/...`); our own `DIAGNOSIS//ICD9//...` spellings are retried;
- `MEDICATION//START//<name>` -> `MEDICATION//<ingredient or name>` plus an `ATC:` event;
- `DOB` -> `MEDS_BIRTH`, `DEATH` -> `MEDS_DEATH`, `Gender/F`, `GENDER//Female` -> `GENDER//F`;
- every other code is kept as it is (counted in family "other", unresolved by definition);
- times, numeric and text values as given; extra columns are dropped except `admission_id`
  (kept, null when absent); MEDS < 0.3 names `patient_id` / `timestamp` are mapped with a
  warning; a shard lacking subject_id / time / code, or with a subject_id outside [0, 2^50),
  is refused (one line naming the file) before anything is written; ties at one time keep
  the source's row order; the source's `subject_splits.parquet` is used, not re-hashed;
  its `codes.parquet` fills descriptions of codes the project vocabulary does not know.
"""

from __future__ import annotations

import re

import polars as pl

from ehr.meds_io import read_codes, read_dataset_json, read_splits, shard_paths
from ehr.schema import EVENT_SCHEMA
from ehr.sources.base import Context, STAGE1_SCHEMA

IMPORT_RULES: list[tuple[str, str]] = [
    (r"^DIAGNOSIS//ICD//9//(.+)$", "dx_icd9"), (r"^DIAGNOSIS//ICD//10//(.+)$", "dx_icd10"),
    (r"^PROCEDURE//ICD//9//(.+)$", "px_icd9"), (r"^PROCEDURE//ICD//10//(.+)$", "px_icd10"),
    (r"^ICD9CM/(.+)$", "dx_icd9"), (r"^ICD10CM/(.+)$", "dx_icd10"),
    (r"^ICD9Proc/(.+)$", "px_icd9"), (r"^ICD10PCS/(.+)$", "px_icd10"),
    (r"^ICD9CM:(.+)$", "dx_icd9"), (r"^ICD10CM:(.+)$", "dx_icd10"),
    (r"^ICD9PCS:(.+)$", "px_icd9"), (r"^ICD10PCS:(.+)$", "px_icd10"),
    (r"^DIAGNOSIS//ICD9//(.+)$", "dx_icd9"), (r"^DIAGNOSIS//ICD10//(.+)$", "dx_icd10"),
    (r"^PROCEDURE//ICD9//(.+)$", "px_icd9"), (r"^PROCEDURE//ICD10//(.+)$", "px_icd10"),
    (r"^MEDICATION//START//(.+)$", "drug"),
]
RENAMES = {"DOB": "MEDS_BIRTH", "DEATH": "MEDS_DEATH"}
# structural codes (birth, death, sex, stay markers): kept, outside every code family
STRUCTURAL = ("MEDS_", "GENDER//", "HOSPITAL_ADMISSION", "HOSPITAL_DISCHARGE", "ICU_ADMISSION", "ICU_DISCHARGE")
_GENDER = re.compile(r"^(?i:gender)(?://|/)(.+)$")
_COMPILED = [(re.compile(p), fam) for p, fam in IMPORT_RULES]


def import_code(code: str) -> tuple[str | None, str | None, str]:
    """(family, raw source code, code to keep when there is no family) for one source code."""
    for rx, fam in _COMPILED:
        m = rx.match(code)
        if m:
            return fam, m.group(1), code
    if code in RENAMES:
        return None, None, RENAMES[code]
    if code.startswith(STRUCTURAL):
        return None, None, code
    g = _GENDER.match(code)
    if g:
        v = g.group(1).strip().upper()
        v = {"FEMALE": "F", "MALE": "M"}.get(v, v)
        return None, None, f"GENDER//{v}"
    return "other", None, code


def import_table(codes: pl.Series) -> pl.DataFrame:
    uniq = codes.drop_nulls().unique().to_list()
    rows = [import_code(c) for c in uniq]
    return pl.DataFrame({"_src": uniq, "_family": [r[0] for r in rows], "_raw": [r[1] for r in rows],
                         "_keep": [r[2] for r in rows]},
                        schema={"_src": pl.String, "_family": pl.String, "_raw": pl.String, "_keep": pl.String})


def convert_meds_dir(ctx: Context):
    """Stage-1 frames (one per source shard), the source's splits, its dataset.json."""
    paths = shard_paths(ctx.root)
    for p in paths:   # refuse before anything is read or written
        check_columns(p)
    distinct = pl.concat([pl.scan_parquet(p).select(pl.col("code").cast(pl.String)).unique() for p in paths]
                         ).unique().collect()["code"]
    table = import_table(distinct).lazy()
    frames = []
    for p in paths:
        lf = pl.scan_parquet(p)
        have = lf.collect_schema().names()
        lf, have = pre_03_names(lf, have, p, ctx)
        dropped = [c for c in have if c not in EVENT_SCHEMA]
        if dropped:
            ctx.ledger.add(ctx.dataset, p.name, f"extra columns dropped: {', '.join(dropped)}", 1, action="noted")
        lf = lf.select([pl.col(c).cast(t) if c in have else pl.lit(None, dtype=t).alias(c)
                        for c, t in EVENT_SCHEMA.items()])
        lf = add_row_order(lf).join(table, left_on="code", right_on="_src", how="left")
        drug = pl.col("_family") == "drug"
        frames.append(lf.select(
            "subject_id", "time",
            pl.when(pl.col("_family").is_null() | (pl.col("_family") == "other")).then(pl.col("_keep"))
            .otherwise(None).alias("code"),
            "numeric_value",
            pl.when(drug).then(pl.coalesce("text_value", "_raw")).otherwise(pl.col("text_value")).alias("text_value"),
            "_family", pl.when(pl.col("_family") == "other").then(pl.col("_keep")).otherwise(pl.col("_raw")).alias("_raw"),
            pl.lit(None, dtype=pl.String).alias("_ndc"), pl.lit(None, dtype=pl.Datetime("us")).alias("_stay"),
            pl.col("_row").alias("_order"), "admission_id").select(list(STAGE1_SCHEMA)))
    ctx.extra_codes = read_codes(ctx.root)
    return frames, read_splits(ctx.root), read_dataset_json(ctx.root)


# MEDS before 0.3 named the subject and time columns `patient_id` / `timestamp`
PRE_03_RENAMES = {"patient_id": "subject_id", "timestamp": "time"}
# subject ids must leave room for sample ids (subject_id * 4096 + k, ehr.tasks.base)
MAX_SUBJECT_ID = 2 ** 62 // 4096


class MedsImportError(ValueError):
    """A MEDS directory this importer refuses; the message names the file and the fix."""


def check_columns(path) -> None:
    """Refuse a shard without the columns we need (after the pre-0.3 renames), or with
    subject ids that cannot form sample ids, before anything is written."""
    import pyarrow.parquet as pq
    names = pq.read_schema(path).names
    renamed = {PRE_03_RENAMES.get(c, c) if c in PRE_03_RENAMES and PRE_03_RENAMES[c] not in names else c
               for c in names}
    missing = [c for c in ("subject_id", "time", "code") if c not in renamed]
    if missing:
        raise MedsImportError(f"{path}: no column {', '.join(missing)} (has {', '.join(names)}); "
                              "a MEDS >= 0.3 data shard needs subject_id, time, code")
    sid = "subject_id" if "subject_id" in names else "patient_id"
    top = pl.scan_parquet(path).select(pl.col(sid).max().alias("hi"), pl.col(sid).min().alias("lo")).collect().row(0)
    if top[0] is not None and (top[0] >= MAX_SUBJECT_ID or top[1] < 0):
        raise MedsImportError(f"{path}: subject_id {top[0] if top[0] >= MAX_SUBJECT_ID else top[1]} does not fit "
                              f"(ids must be in [0, {MAX_SUBJECT_ID}) = [0, 2^50) to form sample ids); "
                              "renumber the subjects (keep a map) and import again")


def pre_03_names(lf: pl.LazyFrame, have: list[str], path, ctx: Context):
    """Map MEDS < 0.3 column names (`patient_id`, `timestamp`) to 0.3+ (`subject_id`, `time`),
    with a warning and a ledger note."""
    ren = {old: new for old, new in PRE_03_RENAMES.items() if old in have and new not in have}
    if not ren:
        return lf, have
    import warnings
    msg = (f"{path}: MEDS < 0.3 column names {', '.join(f'{a} -> {b}' for a, b in ren.items())} mapped "
           f"(this importer reads MEDS 0.3+, meds 0.4 schema)")
    warnings.warn(msg, stacklevel=2)
    ctx.ledger.add(ctx.dataset, path.name, f"MEDS < 0.3 column names mapped: {', '.join(ren)}", 1, action="noted")
    lf = lf.rename(ren)
    return lf, lf.collect_schema().names()


def add_row_order(lf: pl.LazyFrame) -> pl.LazyFrame:
    return lf.with_row_index("_row").with_columns(pl.col("_row").cast(pl.Int64))
