"""Length of stay.

Presets:
- `pyhealth_10class` (the paper / PyHealth): days = whole days of (discharge - admission);
  class 0 for < 1 day, 1..7 for that many days, 8 for 8-14 days, 9 for > 14 days. As in the
  paper, the input is the whole current visit: prediction at discharge, history up to it
  included; the stay needs a diagnosis, a procedure and a drug. The discharge-stamped codes
  are therefore in the input: this reproduces the paper's setting, it is not an early
  prediction.
- `admission_10class`: the same ten classes predicted at admission (input = history up to and
  including the admission event; no code of the stay).
- `ehrshot_long_los` (EHRSHOT): stay >= 7 days, predicted at 23:59 on the admission day;
  input = history up to then; stays that end (discharge) by the prediction time are excluded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from ehr.schema import PREDICTION_TIME, SUBJECT_ID
from ehr.tasks.base import Task
from ehr.tasks.stays import end_of_day, stay_code_flags, stays

TEN_CLASSES = ["<1d", "1d", "2d", "3d", "4d", "5d", "6d", "7d", "8-14d", ">14d"]
PRESETS = {
    "pyhealth_10class": dict(kind="multiclass", prediction="discharge", require_codes=True, in_stay=False),
    "admission_10class": dict(kind="multiclass", prediction="admission", require_codes=False, in_stay=False),
    "ehrshot_long_los": dict(kind="binary", prediction="admission_day_end", require_codes=False, in_stay=True,
                             long_days=7),
}


def los_class(days: pl.Expr) -> pl.Expr:
    """PyHealth's bins over whole days: <1 -> 0, 1..7 -> days, 8..14 -> 8, >14 -> 9."""
    return (pl.when(days < 1).then(0).when(days <= 7).then(days)
            .when(days <= 14).then(8).otherwise(9)).cast(pl.Int64)


@dataclass
class LengthOfStay(Task):
    name: str = "length_of_stay"
    preset: str = "pyhealth_10class"
    kind: str = "multiclass"
    classes: list[str] = field(default_factory=lambda: list(TEN_CLASSES))
    prediction: str = "discharge"    # discharge | admission | admission_day_end
    require_codes: bool = True
    long_days: int = 7

    def __post_init__(self):
        super().__post_init__()
        if self.kind == "binary":
            self.classes = [f"<{self.long_days}d", f">={self.long_days}d"]

    def needs_calendar(self) -> bool:
        return self.prediction == "admission_day_end"

    def describe(self) -> dict[str, str]:
        if self.kind == "binary":
            return {"prediction_time": "23:59 on the admission day",
                    "input_window": "all history up to the prediction time",
                    "exclusions": "stays discharged (or dead) by the prediction time",
                    "label": f"discharge - admission >= {self.long_days} days"}
        pt = {"discharge": "discharge (the paper: input = whole current visit)",
              "admission": "admission"}[self.prediction]
        return {"prediction_time": pt,
                "input_window": "all history up to the prediction time"
                                + (" (current stay's codes included)" if self.prediction == "discharge" else ""),
                "exclusions": "stays without a diagnosis, a procedure or a drug" if self.require_codes else "none",
                "label": "whole days of (discharge - admission): <1 -> 0, 1..7 -> days, 8-14 -> 8, >14 -> 9"}

    def label(self, events: pl.DataFrame) -> pl.DataFrame:
        s = stays(events)
        if self.require_codes:
            s = s.join(stay_code_flags(events), on=[SUBJECT_ID, "stay"], how="left").filter(
                pl.col("has_dx") & pl.col("has_px") & pl.col("has_drug"))
        los = pl.col("discharge") - pl.col("admit")
        if self.kind == "binary":
            s = s.with_columns(end_of_day("admit").alias(PREDICTION_TIME)).filter(
                pl.col("discharge") > pl.col(PREDICTION_TIME))
            value = (los >= pl.duration(days=self.long_days)).alias("boolean_value")
        else:
            pt = pl.col("discharge") if self.prediction == "discharge" else pl.col("admit")
            s = s.with_columns(pt.alias(PREDICTION_TIME))
            value = los_class(los.dt.total_days()).alias("integer_value")
        return self.finish(s.select(SUBJECT_ID, PREDICTION_TIME,
                                    pl.lit(None, dtype=pl.Datetime("us")).alias("input_start"),
                                    value, pl.col("admit").alias("stay_start")))


def make(preset: str) -> LengthOfStay:
    if preset not in PRESETS:
        raise KeyError(f"length_of_stay presets: {sorted(PRESETS)}; got {preset!r}")
    return LengthOfStay(preset=preset, **PRESETS[preset])
