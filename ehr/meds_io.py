"""MEDS directories in and out (schema of the `meds` package 0.4.1).

Layout written:
    data/<k>.parquet                 shards; each subject whole in one shard, sorted by time
    metadata/codes.parquet           code, description, parent_codes
    metadata/subject_splits.parquet  subject_id, split (train / tuning / held_out)
    metadata/dataset.json            dataset_name, etl_name, meds_version, created_at, ...

Every table is cast to the `meds` pyarrow schema and validated before it is written, so a
directory this module writes is one other MEDS tools read (`meds_reader_convert`, ACES).
Reading accepts any MEDS directory (shards in nested folders too; extra columns other than
`admission_id` dropped, `admission_id` null when absent).
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import meds
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from ehr.schema import ADMISSION_ID, CODE, EVENT_SCHEMA, SPLITS, SUBJECT_ID, TIME, conform_events
from medbase.atomic import atomic_path, atomic_write_text

DATA_DIR, CODES_FILE, SPLITS_FILE, DATASET_FILE = ("data", "metadata/codes.parquet",
                                                   "metadata/subject_splits.parquet", "metadata/dataset.json")


class MedsValidationError(ValueError):
    """A MEDS directory breaks the schema or its invariants; the message says where."""


# ---- writing --------------------------------------------------------------------------
def events_to_arrow(df: pl.DataFrame) -> pa.Table:
    """The five MEDS columns cast to `meds.DataSchema`, plus the nullable extra column
    `admission_id` (int64; MEDS allows extra columns), validated."""
    if ADMISSION_ID not in df.columns:
        df = df.with_columns(pl.lit(None, dtype=pl.Int64).alias(ADMISSION_ID))
    t = df.select(list(EVENT_SCHEMA)).to_arrow()
    schema = meds.DataSchema.schema()
    t = t.cast(pa.schema(list(schema) + [pa.field(ADMISSION_ID, pa.int64(), nullable=True)]))
    meds.DataSchema.validate(t)
    return t


def write_shard(df: pl.DataFrame, path: str | Path) -> int:
    """Write one data shard (already one-shard-per-subject and sorted); returns rows."""
    t = events_to_arrow(df)
    with atomic_path(path) as tmp:
        pq.write_table(t, tmp, row_group_size=1 << 17)
    return t.num_rows


def write_codes(codes: pl.DataFrame, meds_dir: str | Path) -> Path:
    t = codes.select("code", "description", "parent_codes").to_arrow().cast(meds.CodeMetadataSchema.schema())
    meds.CodeMetadataSchema.validate(t)
    path = Path(meds_dir) / CODES_FILE
    with atomic_path(path) as tmp:
        pq.write_table(t, tmp)
    return path


def write_splits(splits: pl.DataFrame, meds_dir: str | Path) -> Path:
    t = splits.select(SUBJECT_ID, "split").sort(SUBJECT_ID).to_arrow().cast(meds.SubjectSplitSchema.schema())
    meds.SubjectSplitSchema.validate(t)
    path = Path(meds_dir) / SPLITS_FILE
    with atomic_path(path) as tmp:
        pq.write_table(t, tmp)
    return path


def write_dataset_json(meds_dir: str | Path, dataset_name: str, extra: dict | None = None,
                       etl_name: str = "medtok-ehr", etl_version: str = "0.1.0") -> Path:
    """`metadata/dataset.json` with the MEDS fields; `extra` (the conversion rules, the
    source's own flags such as `synthetic` or `relative_times`) goes under `medtok`."""
    meta = {"dataset_name": dataset_name, "etl_name": etl_name, "etl_version": etl_version,
            "meds_version": meds.__version__,
            "created_at": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()}
    if extra:
        meta["medtok"] = extra
    meds.DatasetMetadataSchema.validate(json.loads(json.dumps(meta, default=str)))
    path = Path(meds_dir) / DATASET_FILE
    atomic_write_text(path, json.dumps(meta, indent=1, default=str) + "\n")
    return path


def write_labels(labels: pl.DataFrame, path: str | Path) -> Path:
    """A MEDS label table (`meds.LabelSchema`: no extra columns) from a task's label frame."""
    cols = [c for c in ("subject_id", "prediction_time", "boolean_value", "integer_value", "float_value",
                        "categorical_value") if c in labels.columns]
    schema = meds.LabelSchema.schema()
    t = labels.select(cols).to_arrow()
    t = t.cast(pa.schema([schema.field(c) for c in cols]))
    meds.LabelSchema.validate(t)
    with atomic_path(path) as tmp:
        pq.write_table(t, tmp)
    return Path(path)


# ---- reading --------------------------------------------------------------------------
def shard_paths(meds_dir: str | Path) -> list[Path]:
    root = Path(meds_dir) / DATA_DIR
    paths = sorted(p for p in root.rglob("*.parquet") if not p.name.startswith("."))
    if not paths:
        raise FileNotFoundError(f"no MEDS data shards under {root}")
    return paths


def read_shard(path: str | Path) -> pl.DataFrame:
    """One shard as the project's event frame (the MEDS columns + admission_id, conformed)."""
    lf = pl.scan_parquet(path)
    have = lf.collect_schema().names()
    cols = [c for c in EVENT_SCHEMA if c in have]
    return conform_events(lf.select(cols).collect())


def scan_meds(meds_dir: str | Path) -> pl.LazyFrame:
    """All shards lazily (the five MEDS columns); sort per shard when order matters."""
    frames = []
    for p in shard_paths(meds_dir):
        lf = pl.scan_parquet(p)
        have = lf.collect_schema().names()
        frames.append(lf.select([pl.col(c).cast(t) if c in have else pl.lit(None, dtype=t).alias(c)
                                 for c, t in EVENT_SCHEMA.items()]))
    return pl.concat(frames, how="vertical")


def read_meds(meds_dir: str | Path) -> pl.DataFrame:
    """The whole dataset as one event frame (subjects together, sorted by time)."""
    return conform_events(scan_meds(meds_dir).collect())


def read_splits(meds_dir: str | Path) -> pl.DataFrame | None:
    path = Path(meds_dir) / SPLITS_FILE
    if not path.exists():
        return None
    return pl.read_parquet(path).select(pl.col(SUBJECT_ID).cast(pl.Int64), pl.col("split").cast(pl.String))


def read_codes(meds_dir: str | Path) -> pl.DataFrame | None:
    path = Path(meds_dir) / CODES_FILE
    return pl.read_parquet(path) if path.exists() else None


def read_dataset_json(meds_dir: str | Path) -> dict:
    path = Path(meds_dir) / DATASET_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


# ---- validation -----------------------------------------------------------------------
def validate_meds_dir(meds_dir: str | Path, require_splits: bool = True) -> dict:
    """Check a MEDS directory against the `meds` schemas and the data invariants:
    each subject in one shard, contiguous and sorted by time (static rows first), no null
    subject or code; splits disjoint; every data code in codes.parquet. Returns counts."""
    meds_dir = Path(meds_dir)
    seen: set[int] = set()
    n_events = 0
    codes_in_data: set[str] = set()
    for path in shard_paths(meds_dir):
        t = pq.read_table(path)
        try:
            meds.DataSchema.validate(t)
        except Exception as e:  # flexible_schema raises its own error types
            raise MedsValidationError(f"{path}: not a MEDS data table: {e}") from e
        df = pl.from_arrow(t).select(SUBJECT_ID, TIME, CODE)
        if df[SUBJECT_ID].null_count() or df[CODE].null_count():
            raise MedsValidationError(f"{path}: null subject_id or code")
        starts = df.select((pl.col(SUBJECT_ID) != pl.col(SUBJECT_ID).shift(1)).fill_null(True).sum()).item()
        subj = df[SUBJECT_ID].unique()
        if starts != len(subj):
            raise MedsValidationError(f"{path}: a subject's rows are not contiguous")
        both = seen.intersection(subj.to_list())
        if both:
            raise MedsValidationError(f"{path}: subjects also in another shard, e.g. {sorted(both)[:5]}")
        seen.update(subj.to_list())
        # sorted by time within subject, static (null) rows first
        t_us = pl.col(TIME).cast(pl.Int64).fill_null(-(1 << 62))
        unsorted = df.select(((pl.col(SUBJECT_ID) == pl.col(SUBJECT_ID).shift(1))
                              & (t_us < t_us.shift(1))).fill_null(False).sum()).item()
        if unsorted:
            raise MedsValidationError(f"{path}: {unsorted} events out of time order within a subject")
        n_events += df.height
        codes_in_data.update(df[CODE].unique().to_list())
    out = {"events": n_events, "subjects": len(seen), "codes": len(codes_in_data)}
    codes_path = meds_dir / CODES_FILE
    if codes_path.exists():
        ct = pq.read_table(codes_path)
        try:
            meds.CodeMetadataSchema.validate(ct)
        except Exception as e:
            raise MedsValidationError(f"{codes_path}: not a MEDS code metadata table: {e}") from e
        missing = codes_in_data - set(ct.column("code").to_pylist())
        if missing:
            raise MedsValidationError(f"{codes_path}: {len(missing)} data codes missing, e.g. {sorted(missing)[:5]}")
    splits_path = meds_dir / SPLITS_FILE
    if splits_path.exists():
        st = pq.read_table(splits_path)
        try:
            meds.SubjectSplitSchema.validate(st)
        except Exception as e:
            raise MedsValidationError(f"{splits_path}: not a MEDS subject split table: {e}") from e
        sp = pl.from_arrow(st)
        dup = sp.filter(pl.col(SUBJECT_ID).is_duplicated())
        if dup.height:
            raise MedsValidationError(f"{splits_path}: subjects in two splits, e.g. {dup[SUBJECT_ID].head(5).to_list()}")
        out["splits"] = dict(sp.group_by("split").len().sort("split").iter_rows())
        unknown = set(out["splits"]) - set(SPLITS)
        if unknown:
            out["nonstandard_splits"] = sorted(unknown)
    elif require_splits:
        raise MedsValidationError(f"{splits_path} missing")
    ds = meds_dir / DATASET_FILE
    if ds.exists():
        meta = json.loads(ds.read_text(encoding="utf-8"))
        try:
            meds.DatasetMetadataSchema.validate(meta)
        except Exception as e:
            raise MedsValidationError(f"{ds}: not MEDS dataset metadata: {e}") from e
    return out
