"""Task samples -> padded visit sequences (for the neural models) and bag-of-codes counts
(for the scikit-learn baselines), built once per task and shared by every tokenizer and seed.

Sequence of a sample = its input events (the task's `inputs`, never after the prediction
time) in time order, static rows first, `MEDS_BIRTH` dropped (it becomes the age):
- visits: a new visit starts at every `HOSPITAL_ADMISSION//` event (events before the first
  admission, and static rows, are visit 0); a sample without admission markers uses calendar
  days as visits;
- a code repeated inside one visit is kept once (its first time), as PyHealth's visit sets;
- the most recent `max_len` tokens are kept (longer histories are cut at the oldest end);
- per token: code index (0 = padding), visit index from the start (BEHRT position) and from
  the end (TransformEHR segment: 0 = the latest visit), days since the sample's first timed
  event, and age in years at the event (NaN when the birth is unknown; static rows take the
  age at the sample's latest input event, not at the prediction time, which for length of
  stay at discharge would tell the stay's length).
Bag of codes: counts of every input event's code over the whole window (no cut, no dedupe).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import sparse

from ehr.schema import ADMISSION_PREFIX, BIRTH, PREDICTION_TIME, SUBJECT_ID, TIME

US_PER_DAY = 86_400_000_000


@dataclass
class SequenceData:
    sample_id: np.ndarray
    subject_id: np.ndarray
    prediction_time: np.ndarray
    split: np.ndarray
    codes: np.ndarray          # [n, L] int64 code-space index, 0 = padding
    visit_pos: np.ndarray      # [n, L] int64 visit index from the first visit
    visit_seg: np.ndarray      # [n, L] int64 visit index from the latest visit (0 = latest)
    days: np.ndarray           # [n, L] float32
    age: np.ndarray            # [n, L] float32 (NaN = unknown)
    length: np.ndarray         # [n] tokens kept
    truncated: np.ndarray      # [n] tokens cut at the oldest end
    bag: sparse.csr_matrix     # [n, V] event counts per code index
    y: np.ndarray              # [n] (binary 0/1, multiclass index) or [n, K] (multilabel)
    kind: str
    classes: list

    def __len__(self) -> int:
        return len(self.sample_id)

    def rows(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)

    def subset(self, idx: np.ndarray) -> "SequenceData":
        f = {k: getattr(self, k) for k in self.__dataclass_fields__}
        for k in ("sample_id", "subject_id", "prediction_time", "split", "codes", "visit_pos", "visit_seg", "days",
                  "age", "length", "truncated", "y"):
            f[k] = f[k][idx]
        f["bag"] = self.bag[idx]
        return SequenceData(**f)


def label_array(kind: str, labels: pl.DataFrame, n_classes: int) -> np.ndarray:
    if kind == "binary":
        return labels["boolean_value"].cast(pl.Int64).to_numpy().astype(np.int64)
    if kind == "multiclass":
        return labels["integer_value"].to_numpy().astype(np.int64)
    arr = np.array(labels["labels"].to_list(), dtype=np.int64).reshape(labels.height, n_classes)
    return arr


def birth_times(events: pl.DataFrame) -> pl.DataFrame:
    return (events.filter(pl.col("code") == BIRTH).group_by(SUBJECT_ID).agg(pl.col(TIME).min().alias("_birth")))


def build_sequences(labels: pl.DataFrame, inputs: pl.DataFrame, births: pl.DataFrame, space, kind: str,
                    classes: list, max_len: int = 256) -> SequenceData:
    """`labels` (with a `split` column), `inputs` [sample_id, subject_id, time, code], births
    [subject_id, _birth] -> SequenceData aligned to the label rows' order."""
    lab = labels.with_row_index("_r").with_columns(pl.col("_r").cast(pl.Int64)).select("_r", "sample_id", SUBJECT_ID, PREDICTION_TIME, "split")
    code_map = pl.DataFrame({"code": space.codes, "_c": np.arange(len(space), dtype=np.int64)})
    ev = (inputs.select("sample_id", TIME, "code")
          .filter(pl.col("code") != BIRTH)
          .join(lab.select("sample_id", "_r", SUBJECT_ID, PREDICTION_TIME), on="sample_id", how="inner")
          .join(code_map, on="code", how="left")
          .with_columns(pl.col("_c").fill_null(0)))
    n = lab.height
    # bag of codes over the whole window
    bag_df = ev.filter(pl.col("_c") > 0).group_by("_r", "_c").len()
    bag = sparse.csr_matrix((bag_df["len"].to_numpy().astype(np.float32),
                             (bag_df["_r"].to_numpy().astype(np.int64), bag_df["_c"].to_numpy())),
                            shape=(n, len(space)))
    ev = (ev.join(births, on=SUBJECT_ID, how="left")
          .sort("_r", TIME, nulls_last=False, maintain_order=True)
          .with_columns(pl.col("code").str.starts_with(ADMISSION_PREFIX).cast(pl.Int64).alias("_adm"))
          .with_columns(pl.col("_adm").sum().over("_r").alias("_nadm"),
                        pl.col(TIME).min().over("_r").alias("_t0"),
                        pl.col(TIME).max().over("_r").alias("_tmax"))
          .with_columns(pl.when(pl.col("_nadm") > 0).then(pl.col("_adm").cum_sum().over("_r"))
                        .otherwise(pl.col(TIME).dt.date().rank("dense").over("_r").fill_null(0).cast(pl.Int64))
                        .alias("_visit"))
          .unique(subset=["_r", "_visit", "_c"], keep="first", maintain_order=True)
          .with_columns(((pl.col(TIME) - pl.col("_t0")).dt.total_microseconds() / US_PER_DAY).fill_null(0.0)
                        .cast(pl.Float32).alias("_days"),
                        ((pl.col(TIME).fill_null(pl.col("_tmax")).fill_null(pl.col(PREDICTION_TIME)) - pl.col("_birth")).dt.total_microseconds()
                         / (365.25 * US_PER_DAY)).cast(pl.Float32).alias("_age"),
                        pl.len().over("_r").cast(pl.Int64).alias("_n"),   # u32 would wrap below
                        pl.int_range(pl.len(), dtype=pl.Int64).over("_r").alias("_i"))
          .with_columns((pl.col("_n") - max_len).clip(lower_bound=0).alias("_cut"))
          .filter(pl.col("_i") >= pl.col("_cut"))
          .with_columns((pl.col("_i") - pl.col("_cut")).alias("_pos"),
                        (pl.col("_visit") - pl.col("_visit").min().over("_r")).alias("_vpos"),
                        (pl.col("_visit").max().over("_r") - pl.col("_visit")).alias("_vseg")))
    L = max(1, min(max_len, int(ev["_pos"].max() + 1) if ev.height else 1))
    r, pos = ev["_r"].to_numpy().astype(np.int64), ev["_pos"].to_numpy().astype(np.int64)

    def dense(col, dtype, fill=0):
        out = np.full((n, L), fill, dtype=dtype)
        out[r, pos] = ev[col].to_numpy().astype(dtype)
        return out

    codes = dense("_c", np.int64)
    length = np.bincount(r, minlength=n).astype(np.int64)
    cut = np.zeros(n, dtype=np.int64)
    if ev.height:
        per = ev.group_by("_r").agg(pl.col("_cut").first())
        cut[per["_r"].to_numpy()] = per["_cut"].to_numpy()
    labs = labels.select([c for c in ("boolean_value", "integer_value", "labels") if c in labels.columns])
    return SequenceData(
        sample_id=lab["sample_id"].to_numpy(), subject_id=lab[SUBJECT_ID].to_numpy(),
        prediction_time=lab[PREDICTION_TIME].to_numpy(), split=lab["split"].fill_null("").to_numpy().astype(str),
        codes=codes, visit_pos=dense("_vpos", np.int64), visit_seg=dense("_vseg", np.int64),
        days=dense("_days", np.float32, 0.0), age=dense("_age", np.float32, np.nan), length=length, truncated=cut,
        bag=bag, y=label_array(kind, labs, len(classes)), kind=kind, classes=list(classes))


def train_seen(data: SequenceData, n_codes: int) -> np.ndarray:
    """[V] bool: codes that occur in the inputs of at least one training sample."""
    tr = data.rows("train")
    seen = np.zeros(n_codes, dtype=bool)
    if len(tr):
        seen[np.unique(data.bag[tr].indices)] = True
    seen[0] = False
    return seen
