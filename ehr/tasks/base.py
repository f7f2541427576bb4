"""What every EHR prediction task provides (one task per file, like the QA datasets).

A task turns MEDS events into samples and says, for each sample, which events are its input.
Contract used by the benchmark (`ehr.benchmark`) and checked by the leakage guards:

- `label(events) -> labels`: one row per sample with
  `sample_id` (int64, unique), `subject_id`, `prediction_time` (data up to and including this
  time may be used, as in MEDS), `input_start` (datetime or null = from the first event), and
  the label in MEDS form: `boolean_value` (binary), `integer_value` (multi-class, 0..K-1) or,
  for multi-label tasks, `labels` (list[int8] of length K, in the order of `classes`);
  `categorical_value` may carry a readable form.
  Also present (additions, never needed by a consumer): `task` and `preset` (recorded in every
  output) and `stay_start` (admission time of the stay a sample is about, null when none;
  known at prediction time), `stay_admission_id` (that stay's source admission id, null when
  none). `sample_id` is `subject_id * 4096 + k` (k-th sample of the
  subject in time order), so labelling shard by shard gives the same ids as labelling at once.
- `inputs(events, labels) -> frame[sample_id, subject_id, time, code]`: the events each
  sample may see. By default: the subject's events with input_start <= time <= prediction_time,
  static rows included, minus codes the task excludes (e.g. the current visit's drugs for drug
  recommendation). Never an event after prediction_time.
- `kind` ("binary" | "multiclass" | "multilabel"), `classes` (names), `preset` (the definition
  followed, recorded in every output) and `describe()` (prediction time, input window,
  exclusions, label: one line each, for the README table).
- `in_stay`: the prediction time falls inside the stay (the discharge-stamped guard applies).
- `check_support(events, meta)` raises `TaskNotSupported` with the reason when the data cannot
  support the task; `params()` / `key()` name every parameter (cache keys include them all).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import polars as pl

from ehr.schema import PREDICTION_TIME, SUBJECT_ID
from ehr.tasks.inputs import window_inputs
from ehr.tasks.stays import code_set

KINDS = ("binary", "multiclass", "multilabel")
VALUE_COLUMN = {"binary": "boolean_value", "multiclass": "integer_value", "multilabel": "labels"}
SAMPLES_PER_SUBJECT = 4096          # sample_id = subject_id * 4096 + k
MAX_SUBJECT_ID = 2 ** 62 // SAMPLES_PER_SUBJECT


class TaskNotSupported(Exception):
    """The dataset cannot support this task (e.g. eICU has no absolute dates); says why."""


@dataclass
class Task:
    name: str = ""
    preset: str = ""
    kind: str = "binary"
    classes: list[str] = field(default_factory=lambda: ["negative", "positive"])
    in_stay: bool = False

    # ---- the contract ------------------------------------------------------
    def label(self, events: pl.DataFrame) -> pl.DataFrame:
        raise NotImplementedError

    def inputs(self, events: pl.DataFrame, labels: pl.DataFrame) -> pl.DataFrame:
        excl = self.input_exclusion()
        carry = ("stay_start", "stay_admission_id") if excl is not None else ()
        return window_inputs(events, labels, exclude=excl, carry=carry)

    def describe(self) -> dict[str, str]:
        raise NotImplementedError

    # ---- hooks -------------------------------------------------------------
    def input_exclusion(self) -> pl.Expr | None:
        """Rows to drop from the window (evaluated on time, code, admission_id, `stay_start` and
        `stay_admission_id`)."""
        return None

    def required_codes(self) -> dict[str, str]:
        """Event families the task needs: name -> regex on `code` (checked by check_support)."""
        return {"hospital admissions": "^HOSPITAL_ADMISSION//", "hospital discharges": "^HOSPITAL_DISCHARGE//"}

    def check_support(self, events: pl.DataFrame, meta: dict | None = None) -> None:
        """Raise TaskNotSupported when the data lacks what the task needs. `meta` is the
        dataset's `dataset.json` (flags at top level or under `medtok`); `relative_times: true`
        (offsets only, no absolute dates, e.g. eICU) rules out tasks that need calendar days or
        gaps between hospital stays."""
        meta = meta or {}
        flags = {**meta, **(meta.get("medtok") or {})}
        if (flags.get("relative_times") or flags.get("time_basis") == "offsets") and self.needs_calendar():
            name = flags.get("dataset_name", "this dataset")
            raise TaskNotSupported(f"{self.name}/{self.preset}: {name} has time offsets only "
                                   "(no absolute dates or gaps between hospital stays)")
        codes = code_set(events)
        for what, pattern in self.required_codes().items():
            if not codes.str.contains(pattern).any():
                raise TaskNotSupported(f"{self.name}/{self.preset}: no {what} events (code ~ {pattern!r})")

    def needs_calendar(self) -> bool:
        """True when labels use calendar days or times between stays (not offset-only data)."""
        return False

    # ---- identity ----------------------------------------------------------
    def params(self) -> dict:
        return json.loads(json.dumps(asdict(self), default=str))

    def key(self) -> str:
        """Stable id of the task definition (every parameter), for caches and output names."""
        blob = json.dumps(self.params(), sort_keys=True)
        return f"{self.name}.{self.preset}.{hashlib.blake2b(blob.encode(), digest_size=6).hexdigest()}"

    @property
    def value_column(self) -> str:
        return VALUE_COLUMN[self.kind]

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")

    # ---- shared finishing --------------------------------------------------
    def finish(self, df: pl.DataFrame) -> pl.DataFrame:
        """Sort samples, give them stable ids, add task/preset, cast to the label schema.
        `df` holds subject_id, prediction_time, input_start, the value column and optionally
        stay_start / categorical_value."""
        vc = self.value_column
        if "stay_start" not in df.columns:
            df = df.with_columns(pl.lit(None, dtype=pl.Datetime("us")).alias("stay_start"))
        if "stay_admission_id" not in df.columns:
            df = df.with_columns(pl.lit(None, dtype=pl.Int64).alias("stay_admission_id"))
        if "categorical_value" not in df.columns:
            if self.kind == "multilabel":
                names = pl.Series(self.classes)
                cat = pl.col(vc).list.eval(pl.int_range(pl.len()).filter(pl.element() == 1))
                df = df.with_columns(cat.list.eval(pl.element().replace_strict(
                    list(range(len(names))), names.to_list(), return_dtype=pl.String))
                    .list.join("|").alias("categorical_value"))
            else:
                idx = pl.col(vc).cast(pl.Int64)
                df = df.with_columns(idx.replace_strict(list(range(len(self.classes))), self.classes,
                                                        default=None, return_dtype=pl.String)
                                     .alias("categorical_value"))
        if df.height and df[SUBJECT_ID].max() >= MAX_SUBJECT_ID:
            raise ValueError(f"subject_id above {MAX_SUBJECT_ID} cannot form sample ids")
        dtype = {"boolean_value": pl.Boolean, "integer_value": pl.Int64, "labels": pl.List(pl.Int8)}[vc]
        df = (df.sort(SUBJECT_ID, PREDICTION_TIME, "stay_start", maintain_order=True)
              .with_columns(pl.int_range(pl.len(), dtype=pl.Int64).over(SUBJECT_ID).alias("_k")))
        if df.height and df["_k"].max() >= SAMPLES_PER_SUBJECT:
            raise ValueError(f"a subject has more than {SAMPLES_PER_SUBJECT} samples")
        return df.select(
            (pl.col(SUBJECT_ID).cast(pl.Int64) * SAMPLES_PER_SUBJECT + pl.col("_k")).alias("sample_id"),
            pl.col(SUBJECT_ID).cast(pl.Int64),
            pl.col(PREDICTION_TIME).cast(pl.Datetime("us")),
            pl.col("input_start").cast(pl.Datetime("us")),
            pl.col(vc).cast(dtype),
            pl.col("categorical_value").cast(pl.String),
            pl.col("stay_start").cast(pl.Datetime("us")),
            pl.col("stay_admission_id").cast(pl.Int64),
            pl.lit(self.name).alias("task"),
            pl.lit(self.preset).alias("preset"),
        )

    def empty_labels(self) -> pl.DataFrame:
        return self.finish(pl.DataFrame(schema={SUBJECT_ID: pl.Int64, PREDICTION_TIME: pl.Datetime("us"),
                                                "input_start": pl.Datetime("us"),
                                                self.value_column: {"boolean_value": pl.Boolean,
                                                                    "integer_value": pl.Int64,
                                                                    "labels": pl.List(pl.Int8)}[self.value_column]}))
