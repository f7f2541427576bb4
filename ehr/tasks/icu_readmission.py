"""ICU readmission (PyHealth's eICU readmission; the hierarchical-ICD paper's transfer task,
issue 22): at the discharge of an ICU (unit) stay, does the patient have a LATER unit stay in
the same hospital stay?

Presets:
- `same_hospital_stay` (default): every unit stay with a hospital-stay id gives a sample;
- `pyhealth_same_hospital_stay`: as PyHealth, the unit stay must hold a diagnosis, a
  procedure (eICU: treatment) and a drug.
Common rules:
- unit stays: `ehr.tasks.stays.icu_stays` (`ICU_ADMISSION//` .. `ICU_DISCHARGE//` paired within
  their hospital stay, `admission_id` = eICU `patienthealthsystemstayid`, MIMIC `hadm_id`);
- prediction time: the unit discharge; input: the whole history up to it (current unit stay
  included);
- positive: another unit stay of the same hospital stay (same admission id) starts after this
  unit stay's admission (no time window: the hospital stay bounds it);
- exclusions: a unit stay ending in death (`MEDS_DEATH` in [unit admission, unit discharge]);
  unit stays without a hospital-stay id (the "same hospital stay" is unknown);
- a later death in the hospital stay without another unit stay is negative.
Uses times inside one hospital stay only, so it runs on offset-only data (eICU).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from ehr.schema import ADMISSION_ID, CODE, DEATH, PREDICTION_TIME, SUBJECT_ID, TIME
from ehr.tasks.base import Task
from ehr.tasks.stays import icu_stay_code_flags, icu_stays

PRESETS = {"same_hospital_stay": dict(require_codes=False),
           "pyhealth_same_hospital_stay": dict(require_codes=True)}


@dataclass
class ICUReadmission(Task):
    name: str = "icu_readmission"
    preset: str = "same_hospital_stay"
    kind: str = "binary"
    classes: list[str] = field(default_factory=lambda: ["no_icu_readmission", "icu_readmission"])
    require_codes: bool = False

    def required_codes(self) -> dict[str, str]:
        return {"ICU admissions": "^ICU_ADMISSION//", "ICU discharges": "^ICU_DISCHARGE//"}

    def describe(self) -> dict[str, str]:
        excl = ["unit stays ending in death", "unit stays without a hospital-stay id"]
        if self.require_codes:
            excl.append("unit stays without a diagnosis, a procedure and a drug")
        return {"prediction_time": "discharge of the ICU (unit) stay",
                "input_window": "all history up to the prediction time (current unit stay included)",
                "exclusions": "; ".join(excl),
                "label": "a later unit stay in the same hospital stay (same admission id); no time window"}

    def label(self, events: pl.DataFrame) -> pl.DataFrame:
        u = icu_stays(events).filter(pl.col(ADMISSION_ID).is_not_null()).sort(SUBJECT_ID, ADMISSION_ID, "admit")
        u = u.with_columns(pl.col("admit").shift(-1).over(SUBJECT_ID, ADMISSION_ID).alias("next_unit_admit"))
        deaths = (events.filter(pl.col(CODE) == DEATH).filter(pl.col(TIME).is_not_null())
                  .group_by(SUBJECT_ID).agg(pl.col(TIME).min().alias("_death")))
        u = u.join(deaths, on=SUBJECT_ID, how="left").filter(
            ~((pl.col("_death") >= pl.col("admit")) & (pl.col("_death") <= pl.col("discharge"))).fill_null(False))
        if self.require_codes:
            u = u.join(icu_stay_code_flags(events), on=[SUBJECT_ID, "stay"], how="left").filter(
                pl.col("has_dx") & pl.col("has_px") & pl.col("has_drug"))
        return self.finish(u.select(SUBJECT_ID, pl.col("discharge").alias(PREDICTION_TIME),
                                    pl.lit(None, dtype=pl.Datetime("us")).alias("input_start"),
                                    pl.col("next_unit_admit").is_not_null().alias("boolean_value"),
                                    pl.col("admit").alias("stay_start"),
                                    pl.col(ADMISSION_ID).alias("stay_admission_id")))


def make(preset: str) -> ICUReadmission:
    if preset not in PRESETS:
        raise KeyError(f"icu_readmission presets: {sorted(PRESETS)}; got {preset!r}")
    return ICUReadmission(preset=preset, **PRESETS[preset])
