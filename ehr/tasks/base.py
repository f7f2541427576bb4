"""What every EHR prediction task provides (one task per file, like the QA datasets).

A task turns MEDS events into samples and says, for each sample, which events are its input.
Contract used by the benchmark (`ehr.benchmark`) and checked by the leakage guards:

- `label(events) -> labels`: one row per sample with
  `sample_id` (int64, unique), `subject_id`, `prediction_time` (data up to and including this
  time may be used, as in MEDS), `input_start` (datetime or null = from the first event), and
  the label in MEDS form: `boolean_value` (binary), `integer_value` (multi-class, 0..K-1) or,
  for multi-label tasks, `labels` (list[int8] of length K, in the order of `classes`);
  `categorical_value` may carry a readable form.
- `inputs(events, labels) -> frame[sample_id, subject_id, time, code]`: the events each
  sample may see. By default: the subject's events with input_start <= time <= prediction_time,
  static rows included, minus codes the task excludes (e.g. the current visit's drugs for drug
  recommendation). Never an event after prediction_time.
- `kind` ("binary" | "multiclass" | "multilabel"), `classes` (names), `preset` (the definition
  followed, recorded in every output) and `describe()` (prediction time, input window,
  exclusions: one line each, for the README table).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

KINDS = ("binary", "multiclass", "multilabel")


class TaskNotSupported(Exception):
    """The dataset cannot support this task (e.g. eICU has no absolute dates); says why."""


@dataclass
class Task:
    name: str = ""
    preset: str = ""
    kind: str = "binary"
    classes: list[str] = field(default_factory=lambda: ["negative", "positive"])

    def label(self, events: pl.DataFrame) -> pl.DataFrame:
        raise NotImplementedError

    def inputs(self, events: pl.DataFrame, labels: pl.DataFrame) -> pl.DataFrame:
        raise NotImplementedError

    def describe(self) -> dict[str, str]:
        raise NotImplementedError
