"""Stage 2: stage-1 events -> a MEDS directory, shard by shard, in bounded memory.

1. every converter's stage-1 frames are streamed once into one parquet file (`sink_parquet`);
2. the distinct source codes and drug names are resolved once (small tables);
3. subjects are sorted and cut into shards of `subjects_per_shard`; for each shard the
   events of its subject-id range are read (parquet row-group statistics skip the rest),
   joined to the mapping tables, ATC events added, sorted (subject, time with static rows
   first, `_order`, code) and written as `data/<k>.parquet`;
4. coverage per code family and the unmapped codes are counted in the same pass.
Peak memory is one shard plus the mapping tables, whatever the dataset size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from tqdm.auto import tqdm

from ehr.meds_io import write_codes, write_dataset_json, write_shard, write_splits
from ehr.schema import EVENT_SCHEMA, SUBJECT_ID
from ehr.sources.base import Context, STAGE1_SCHEMA


@dataclass
class AssembleResult:
    out_dir: Path
    events: int
    subjects: int
    shards: int
    coverage: pl.DataFrame            # family, events, resolved, coverage
    unmapped: pl.DataFrame            # family, code, events (all unmapped codes, most frequent first)
    codes: int = 0
    extra: dict = field(default_factory=dict)


def _conform_stage1(lf: pl.LazyFrame) -> pl.LazyFrame:
    have = lf.collect_schema().names()
    return lf.select([pl.col(c).cast(t) if c in have else pl.lit(None, dtype=t).alias(c)
                      for c, t in STAGE1_SCHEMA.items()])


def assemble_meds(ctx: Context, frames: list[pl.LazyFrame], out_dir: str | Path, *, splits_fn,
             subjects_per_shard: int = 20_000, dataset_meta: dict | None = None,
             progress: bool = True) -> AssembleResult:
    """Write the MEDS directory. `splits_fn(subject_ids) -> (splits frame, info dict)` is
    called on the sorted distinct subjects before any event is written or labelled."""
    out_dir = Path(out_dir)
    stage = ctx.workdir / "stage1.parquet"
    pl.concat([_conform_stage1(f) for f in frames], how="vertical").sink_parquet(stage)
    ev = pl.scan_parquet(stage)
    resolver = ctx.resolver

    coded = (ev.filter(pl.col("_raw").is_not_null() & (pl.col("_family") != "drug"))
             .select("_family", "_raw").unique().collect())
    code_map = resolver.code_table(coded).lazy()
    names = ev.filter(pl.col("_family") == "drug").select("_raw").unique().collect()["_raw"]
    drug_map = resolver.drug_table(names).lazy()
    ndc_map = None
    if resolver.ndc_atc is not None:
        ndc_map = (resolver.ndc_atc.lazy().group_by("ndc").agg(pl.col("atc").sort().alias("_ndc_atc"))
                   .rename({"ndc": "_ndc"}))

    subjects = ev.select(SUBJECT_ID).unique().collect()[SUBJECT_ID].sort()
    splits, split_info = splits_fn(subjects)
    n_shards = max(1, -(-len(subjects) // subjects_per_shard))
    cov_parts, unm_parts, code_parts = [], [], []
    total = 0
    (out_dir / "data").mkdir(parents=True, exist_ok=True)
    for old in (out_dir / "data").glob("*.parquet"):
        old.unlink()    # a re-run with fewer shards must not leave stale ones
    for k in tqdm(range(n_shards), desc=f"{ctx.dataset}: write shards", disable=not progress or n_shards < 2):
        ids = subjects[k * subjects_per_shard:(k + 1) * subjects_per_shard]
        lo, hi = ids[0], ids[-1]
        part = ev.filter(pl.col(SUBJECT_ID).is_between(lo, hi)).collect().lazy()   # one read per shard
        plain = part.filter(pl.col("_family").is_null()).with_columns(pl.lit(None, dtype=pl.Boolean).alias("_resolved"))
        mapped = (part.filter(pl.col("_family").is_not_null() & (pl.col("_family") != "drug"))
                  .drop("code").join(code_map, on=["_family", "_raw"], how="left"))
        drugs = part.filter(pl.col("_family") == "drug").drop("code").join(drug_map, on="_raw", how="left")
        if ndc_map is not None:   # NDC -> ATC first (opt-in), the ingredient name's ATC otherwise
            drugs = (drugs.join(ndc_map, on="_ndc", how="left")
                     .with_columns(pl.when(pl.col("_no_atc")).then(None).otherwise(pl.col("_ndc_atc")).alias("_ndc_atc"))
                     .with_columns(pl.coalesce(pl.col("_ndc_atc").list.eval("ATC:" + pl.element()),
                                               pl.concat_list("atc").list.drop_nulls()).alias("_atcs"))
                     .drop("_ndc_atc"))
        else:
            drugs = drugs.with_columns(pl.concat_list("atc").list.drop_nulls().alias("_atcs"))
        drugs = drugs.with_columns((pl.col("_atcs").list.len() > 0).alias("_resolved")).collect()
        atc_rows = (drugs.filter(pl.col("_resolved")).explode("_atcs", empty_as_null=True)
                    .with_columns(pl.col("_atcs").alias("code"), pl.lit(None, dtype=pl.String).alias("text_value"),
                                  pl.lit(None, dtype=pl.Boolean).alias("_resolved"),
                                  pl.lit(None, dtype=pl.String).alias("_family")))
        cols = list(STAGE1_SCHEMA) + ["_resolved"]
        df = pl.concat([plain.select(cols).collect(), mapped.select(cols).collect(), drugs.select(cols),
                        atc_rows.select(cols)], how="vertical")
        cov_parts.append(df.filter(pl.col("_family").is_not_null())
                         .group_by("_family").agg(pl.len().alias("events"), pl.col("_resolved").sum().alias("resolved")))
        unm_parts.append(df.filter(pl.col("_family").is_not_null() & ~pl.col("_resolved"))
                         .group_by("_family", "code").agg(pl.len().alias("events")))
        # every column is a sort key: events tied on (subject, time, code) -- one drug given twice
        # with two NDCs -- otherwise came out in a different order run to run
        df = (df.with_columns(pl.coalesce("_stay", "time").alias("_stay"))
              .sort([SUBJECT_ID, "time", "_stay", "_order", "code", "numeric_value", "text_value", "admission_id"],
                    nulls_last=False).select(list(EVENT_SCHEMA)))
        code_parts.append(df.select(pl.col("code").unique()))
        total += write_shard(df, out_dir / "data" / f"{k}.parquet")

    coverage = _coverage(cov_parts)
    unmapped = (pl.concat(unm_parts).group_by("_family", "code").agg(pl.col("events").sum())
                .rename({"_family": "family"}).sort(["events", "family", "code"], descending=[True, False, False])
                if unm_parts else pl.DataFrame(schema={"family": pl.String, "code": pl.String, "events": pl.UInt32}))
    all_codes = pl.concat(code_parts)["code"].unique() if code_parts else pl.Series("code", [], pl.String)
    meta = resolver.metadata(all_codes)
    if ctx.extra_codes is not None and ctx.extra_codes.height:   # an imported dataset's own descriptions
        theirs = ctx.extra_codes.select(pl.col("code").cast(pl.String),
                                        pl.col("description").cast(pl.String).alias("_d"),
                                        pl.col("parent_codes").cast(pl.List(pl.String)).alias("_p")
                                        ).unique("code", keep="first")
        meta = (meta.join(theirs, on="code", how="left")
                .with_columns(pl.coalesce("description", "_d").alias("description"),
                              pl.when(pl.col("parent_codes").list.len() > 0).then(pl.col("parent_codes"))
                              .otherwise(pl.col("_p").fill_null([])).alias("parent_codes"))
                .drop("_d", "_p"))
    write_codes(meta, out_dir)
    write_splits(splits, out_dir)
    write_dataset_json(out_dir, (dataset_meta or {}).get("dataset_name", ctx.dataset),
                       extra={k: v for k, v in (dataset_meta or {}).items() if k != "dataset_name"} | split_info)
    return AssembleResult(out_dir, total, len(subjects), n_shards, coverage, unmapped, codes=len(all_codes),
                          extra=split_info)


def _coverage(parts: list[pl.DataFrame]) -> pl.DataFrame:
    schema = {"family": pl.String, "events": pl.Int64, "resolved": pl.Int64, "coverage": pl.Float64}
    if not parts:
        return pl.DataFrame(schema=schema)
    return (pl.concat(parts).group_by("_family").agg(pl.col("events").sum().cast(pl.Int64),
                                                     pl.col("resolved").sum().cast(pl.Int64))
            .rename({"_family": "family"}).with_columns((pl.col("resolved") / pl.col("events")).alias("coverage"))
            .sort("family").select(list(schema)))
