"""Mortality.

Presets:
- `paper` (MedTok's EHR code, PyHealth 1.x `mortality_prediction_mimic3_fn`): does the patient
  die in the NEXT admission? One sample per stay that has a next stay (patients need >= 2
  admissions); prediction at this stay's discharge, input = all history up to it; label = the
  next stay ends in an in-hospital death. The stay must hold a diagnosis, a procedure and a
  drug (PyHealth drops it otherwise).
- `in_hospital_early` / `in_hospital_48h`: in-hospital death predicted 24 h (48 h) after
  admission. Input = all history up to the prediction time (previous stays + the first hours of
  this one), so diagnoses stamped at this stay's discharge are never in it. Stays that end
  (discharge or death) at or before the prediction time are excluded (MEDS-DEV's gap rule).
In-hospital death is defined in `ehr.tasks.stays` (death discharge code or MEDS_DEATH within
the stay).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from ehr.schema import PREDICTION_TIME, SUBJECT_ID
from ehr.tasks.base import Task
from ehr.tasks.stays import stay_code_flags, stays

PRESETS = {
    "paper": dict(mode="next_admission", hours=0, require_codes=True, in_stay=False),
    "in_hospital_early": dict(mode="in_hospital", hours=24, require_codes=False, in_stay=True),
    "in_hospital_48h": dict(mode="in_hospital", hours=48, require_codes=False, in_stay=True),
}


@dataclass
class Mortality(Task):
    name: str = "mortality"
    preset: str = "paper"
    kind: str = "binary"
    classes: list[str] = field(default_factory=lambda: ["survived", "died"])
    mode: str = "next_admission"    # next_admission | in_hospital
    hours: int = 0                  # in_hospital: prediction time = admission + hours
    require_codes: bool = True

    def describe(self) -> dict[str, str]:
        if self.mode == "next_admission":
            return {"prediction_time": "discharge of the current stay",
                    "input_window": "all history up to the discharge (current stay included)",
                    "exclusions": "stays without a next admission (patients need >= 2 admissions); "
                                  + ("stays without a diagnosis, a procedure or a drug" if self.require_codes else ""),
                    "label": "the next stay ends in an in-hospital death"}
        return {"prediction_time": f"admission + {self.hours} h",
                "input_window": f"all history up to admission + {self.hours} h (no codes stamped at this stay's discharge)",
                "exclusions": f"stays ending (discharge or death) within {self.hours} h of admission",
                "label": "in-hospital death in this stay"}

    def label(self, events: pl.DataFrame) -> pl.DataFrame:
        s = stays(events).sort(SUBJECT_ID, "stay")
        if self.mode == "next_admission":
            s = s.with_columns(pl.col("died").shift(-1).over(SUBJECT_ID).alias("next_died"))
            if self.require_codes:
                s = s.join(stay_code_flags(events), on=[SUBJECT_ID, "stay"], how="left").filter(
                    pl.col("has_dx") & pl.col("has_px") & pl.col("has_drug"))
            s = s.filter(pl.col("next_died").is_not_null())
            out = s.select(SUBJECT_ID, pl.col("discharge").alias(PREDICTION_TIME),
                           pl.lit(None, dtype=pl.Datetime("us")).alias("input_start"),
                           pl.col("next_died").alias("boolean_value"), pl.col("admit").alias("stay_start"))
        elif self.mode == "in_hospital":
            pt = pl.col("admit") + pl.duration(hours=self.hours)
            end = pl.min_horizontal("discharge", pl.when(pl.col("died")).then(pl.col("death")).otherwise(None))
            s = s.with_columns(pt.alias(PREDICTION_TIME), end.alias("_end")).filter(pl.col("_end") > pl.col(PREDICTION_TIME))
            out = s.select(SUBJECT_ID, PREDICTION_TIME, pl.lit(None, dtype=pl.Datetime("us")).alias("input_start"),
                           pl.col("died").alias("boolean_value"), pl.col("admit").alias("stay_start"))
        else:
            raise ValueError(f"unknown mortality mode {self.mode!r}")
        return self.finish(out)


def make(preset: str) -> Mortality:
    if preset not in PRESETS:
        raise KeyError(f"mortality presets: {sorted(PRESETS)}; got {preset!r}")
    return Mortality(preset=preset, **PRESETS[preset])
