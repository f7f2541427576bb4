"""Length of stay.

Presets:
- `pyhealth_10class` (the paper / PyHealth): days = whole days of (discharge - admission) of
  the hospital stay; class 0 for < 1 day, 1..7 for that many days, 8 for 8-14 days, 9 for
  > 14 days. As in the paper, the input holds the current visit's codes: prediction at
  discharge, history up to it included; the stay needs a diagnosis, a procedure and a drug.
  Only the channels inside the paper's definition are given (PyHealth's models see codes,
  not times): the current stay's discharge marker is dropped and every event of the current
  stay (admission <= time <= discharge) carries the admission time, so neither event times
  nor the discharge marker tell the length. The codes are kept, so their counts (how many
  drugs, procedures, ...) still carry length information: that is the paper's definition.
  The leakage guard `check_stay_length_hidden` checks the rule on every build.
- `pyhealth_unit_10class` (PyHealth's eICU definition): the same ten classes over whole days
  of an ICU (unit) stay (`ICU_ADMISSION//` .. `ICU_DISCHARGE//`, eICU `unitdischargeoffset //
  1440`), predicted at the unit discharge with the same rule (the unit stay's events at the
  unit admission time, its discharge markers dropped); the unit stay needs a diagnosis, a
  procedure (eICU: treatment) and a drug inside it. On MIMIC the diagnoses are stamped at
  the hospital discharge, after most unit stays, so only unit stays that end at (or after) the
  hospital discharge have samples there (MIMIC-III demo: 34 of 136 unit stays).
- `admission_10class`: the same ten classes predicted at admission (input = history up to and
  including the admission event; no code of the stay).
- `ehrshot_long_los` (EHRSHOT): stay >= 7 days, predicted at 23:59 on the admission day;
  input = history up to then; stays that end (discharge) by the prediction time are excluded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from ehr.schema import CODE, DISCHARGE_PREFIX, ICU_DISCHARGE_PREFIX, PREDICTION_TIME, SUBJECT_ID, TIME
from ehr.tasks.base import Task
from ehr.tasks.stays import end_of_day, icu_stay_code_flags, icu_stays, stay_code_flags, stays

TEN_CLASSES = ["<1d", "1d", "2d", "3d", "4d", "5d", "6d", "7d", "8-14d", ">14d"]
PRESETS = {
    "pyhealth_10class": dict(kind="multiclass", prediction="discharge", require_codes=True, in_stay=False),
    "admission_10class": dict(kind="multiclass", prediction="admission", require_codes=False, in_stay=False),
    "ehrshot_long_los": dict(kind="binary", prediction="admission_day_end", require_codes=False, in_stay=True,
                             long_days=7),
    "pyhealth_unit_10class": dict(kind="multiclass", prediction="discharge", require_codes=True, in_stay=False,
                                  stay_kind="icu"),
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
    stay_kind: str = "hospital"      # hospital | icu (unit stays)

    def __post_init__(self):
        super().__post_init__()
        if self.kind == "binary":
            self.classes = [f"<{self.long_days}d", f">={self.long_days}d"]

    @property
    def hides_stay_length(self) -> bool:
        """Predicted at the end of the stay whose length it labels: the input must not show it."""
        return self.kind == "multiclass" and self.prediction == "discharge"

    def required_codes(self) -> dict[str, str]:
        if self.stay_kind == "icu":
            return {"ICU admissions": "^ICU_ADMISSION//", "ICU discharges": "^ICU_DISCHARGE//"}
        return super().required_codes()

    def inputs(self, events: pl.DataFrame, labels: pl.DataFrame) -> pl.DataFrame:
        out = super().inputs(events, labels)
        if not self.hides_stay_length:
            return out
        return hide_stay_length(out, labels)

    def needs_calendar(self) -> bool:
        return self.prediction == "admission_day_end"

    def describe(self) -> dict[str, str]:
        if self.kind == "binary":
            return {"prediction_time": "23:59 on the admission day",
                    "input_window": "all history up to the prediction time",
                    "exclusions": "stays discharged (or dead) by the prediction time",
                    "label": f"discharge - admission >= {self.long_days} days"}
        unit = "unit (ICU) " if self.stay_kind == "icu" else ""
        pt = {"discharge": f"{unit}discharge (the paper: input = the current visit's codes)",
              "admission": "admission"}[self.prediction]
        return {"prediction_time": pt,
                "input_window": "all history up to the prediction time"
                                + (f" (current {unit}stay's codes included, all at its admission time; its discharge "
                                   "marker dropped)" if self.prediction == "discharge" else ""),
                "exclusions": "stays without a diagnosis, a procedure or a drug" if self.require_codes else "none",
                "label": f"whole days of the {unit}stay (discharge - admission): <1 -> 0, 1..7 -> days, "
                         "8-14 -> 8, >14 -> 9"}

    def label(self, events: pl.DataFrame) -> pl.DataFrame:
        if self.stay_kind == "icu":
            s = icu_stays(events)
            if self.require_codes:
                s = s.join(icu_stay_code_flags(events), on=[SUBJECT_ID, "stay"], how="left").filter(
                    pl.col("has_dx") & pl.col("has_px") & pl.col("has_drug"))
            los = pl.col("discharge") - pl.col("admit")
            s = s.with_columns(pl.col("discharge").alias(PREDICTION_TIME))
            return self.finish(s.select(SUBJECT_ID, PREDICTION_TIME,
                                        pl.lit(None, dtype=pl.Datetime("us")).alias("input_start"),
                                        los_class(los.dt.total_days()).alias("integer_value"),
                                        pl.col("admit").alias("stay_start"),
                                        pl.col("admission_id").alias("stay_admission_id")))
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
                                    value, pl.col("admit").alias("stay_start"),
                                    pl.col("admission_id").alias("stay_admission_id")))


def hide_stay_length(inputs: pl.DataFrame, labels: pl.DataFrame) -> pl.DataFrame:
    """The rule of the at-discharge presets: events of the current stay (stay_start <= time <=
    prediction_time) get the stay's start as their time, and the discharge markers at the
    prediction time (the current stay's end) are dropped. Codes are kept."""
    lab = labels.select("sample_id", pl.col("stay_start").alias("_s"), pl.col(PREDICTION_TIME).alias("_p"))
    j = inputs.join(lab, on="sample_id", how="left")
    cur = (pl.col(TIME) >= pl.col("_s")) & (pl.col(TIME) <= pl.col("_p"))
    marker = (pl.col(CODE).str.starts_with(DISCHARGE_PREFIX) | pl.col(CODE).str.starts_with(ICU_DISCHARGE_PREFIX))
    return (j.filter(~(marker & cur).fill_null(False))
            .with_columns(pl.when(cur.fill_null(False)).then(pl.col("_s")).otherwise(pl.col(TIME)).alias(TIME))
            .select(inputs.columns))


def make(preset: str) -> LengthOfStay:
    if preset not in PRESETS:
        raise KeyError(f"length_of_stay presets: {sorted(PRESETS)}; got {preset!r}")
    return LengthOfStay(preset=preset, **PRESETS[preset])
