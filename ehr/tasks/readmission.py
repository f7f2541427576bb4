"""Readmission: is the patient admitted again soon after this stay?

Presets (the definitions disagree; each is followed as written):
- `paper_15d_admit` (MedTok's EHR code, PyHealth 1.x): next admission - this admission,
  in whole days (`.days`), <= 15. Needs a next admission (the last stay gives no sample);
  the stay must have a diagnosis, a procedure and a drug (PyHealth 1.x drops it otherwise).
- `pyhealth_15d_discharge` (PyHealth 2.x): next admission - this discharge < 15 days (exact
  timedelta). Needs a next admission; minors (< 18 at this admission) excluded; the stay needs
  a diagnosis, a procedure and a drug; a stay dropped for that still counts as the next
  admission of the stay before it.
- `ehrshot_30d` (EHRSHOT): prediction at 23:59 on the discharge day; positive when an admission
  starts in (prediction time, + 30 days]. Every stay gives a sample (no next admission =
  negative: no censoring). Same-day readmissions are skipped: when the next admission starts
  on or before the prediction time, the stay gives no sample (the patient is back in hospital).
Common rules: a stay ending in death gives no sample (nobody can be readmitted); same-day
transfers (a next admission on the discharge day) count as readmissions under the paper and
PyHealth presets, as those definitions do, and are skipped under EHRSHOT's.
Prediction time is the discharge (23:59 of its day for EHRSHOT); the input is the whole history
up to it, the current stay included.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from ehr.schema import PREDICTION_TIME, SUBJECT_ID
from ehr.tasks.base import Task
from ehr.tasks.stays import age_years, end_of_day, stay_code_flags, stays

PRESETS = {
    "paper_15d_admit": dict(days=15, anchor="admission", whole_days=True, inclusive=True,
                            needs_next=True, exclude_minors=False, require_codes=True, prediction="discharge"),
    "pyhealth_15d_discharge": dict(days=15, anchor="discharge", whole_days=False, inclusive=False,
                                   needs_next=True, exclude_minors=True, require_codes=True,
                                   prediction="discharge"),
    "ehrshot_30d": dict(days=30, anchor="prediction", whole_days=False, inclusive=True,
                        needs_next=False, exclude_minors=False, require_codes=False,
                        prediction="discharge_day_end"),
}


@dataclass
class Readmission(Task):
    name: str = "readmission"
    preset: str = "paper_15d_admit"
    kind: str = "binary"
    classes: list[str] = field(default_factory=lambda: ["no_readmission", "readmission"])
    days: int = 15
    anchor: str = "admission"          # admission | discharge | prediction: where the gap starts
    whole_days: bool = True            # gap in whole days (timedelta.days) rather than exact
    inclusive: bool = True             # gap <= days (else < days)
    needs_next: bool = True            # last stay gives no sample (else: negative)
    exclude_minors: bool = False
    require_codes: bool = True         # stay must hold a diagnosis, a procedure and a drug
    prediction: str = "discharge"      # discharge | discharge_day_end (23:59)

    def needs_calendar(self) -> bool:
        return True

    def describe(self) -> dict[str, str]:
        pt = "23:59 on the discharge day" if self.prediction == "discharge_day_end" else "discharge of the stay"
        gap = {"admission": "next admission - this admission", "discharge": "next admission - this discharge",
               "prediction": "next admission - prediction time (> 0)"}[self.anchor]
        op = "<=" if self.inclusive else "<"
        unit = "whole days" if self.whole_days else "exact time"
        excl = ["stays ending in death"]
        if self.needs_next:
            excl.append("the last stay (needs a next admission)")
        if self.exclude_minors:
            excl.append("age < 18 at admission")
        if self.require_codes:
            excl.append("stays without a diagnosis, a procedure or a drug")
        if self.prediction == "discharge_day_end":
            excl.append("stays whose next admission starts by the prediction time (same-day readmission)")
        return {"prediction_time": pt, "input_window": "all history up to the prediction time (current stay included)",
                "exclusions": "; ".join(excl),
                "label": f"{gap} {op} {self.days} days ({unit})"
                         + ("; no next admission = negative (no censoring)" if not self.needs_next else ""),
                "same_day_transfers": ("skipped (no sample)" if self.prediction == "discharge_day_end"
                                       else "counted as readmissions (gap 0)")}

    def label(self, events: pl.DataFrame) -> pl.DataFrame:
        s = stays(events)
        s = s.sort(SUBJECT_ID, "stay").with_columns(
            pl.col("admit").shift(-1).over(SUBJECT_ID).alias("next_admit"))
        if self.require_codes:
            s = s.join(stay_code_flags(events), on=[SUBJECT_ID, "stay"], how="left").filter(
                pl.col("has_dx") & pl.col("has_px") & pl.col("has_drug"))
        s = s.filter(~pl.col("died"))
        if self.needs_next:
            s = s.filter(pl.col("next_admit").is_not_null())
        if self.exclude_minors:
            s = s.filter(age_years("admit").fill_null(99) >= 18)
        pt = end_of_day("discharge") if self.prediction == "discharge_day_end" else pl.col("discharge")
        s = s.with_columns(pt.alias(PREDICTION_TIME))
        if self.prediction == "discharge_day_end":
            s = s.filter(pl.col("next_admit").is_null() | (pl.col("next_admit") > pl.col(PREDICTION_TIME)))
        start = {"admission": pl.col("admit"), "discharge": pl.col("discharge"),
                 "prediction": pl.col(PREDICTION_TIME)}[self.anchor]
        gap = pl.col("next_admit") - start
        limit = pl.duration(days=self.days)
        if self.whole_days:
            g = gap.dt.total_days()          # floor of whole days, like timedelta.days
            pos = (g <= self.days) if self.inclusive else (g < self.days)
        else:
            pos = (gap <= limit) if self.inclusive else (gap < limit)
        s = s.with_columns(pos.fill_null(False).alias("boolean_value"))
        return self.finish(s.select(SUBJECT_ID, PREDICTION_TIME, pl.lit(None, dtype=pl.Datetime("us")).alias("input_start"),
                                    "boolean_value", pl.col("admit").alias("stay_start")))


def make(preset: str) -> Readmission:
    if preset not in PRESETS:
        raise KeyError(f"readmission presets: {sorted(PRESETS)}; got {preset!r}")
    return Readmission(preset=preset, **PRESETS[preset])
