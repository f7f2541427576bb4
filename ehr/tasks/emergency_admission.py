"""Emergency admission (the hierarchical-ICD paper's second task, issue 22): at the discharge of
a stay, is the NEXT admission an emergency admission starting within 30 days?

Preset `next_30d` (the only one):
- prediction time: the discharge of the stay (exact time); input: the whole history up to it,
  the current stay included;
- positive: the subject's next admission (the first admission starting after this discharge)
  starts in (discharge, discharge + 30 days] AND its admission marker names an emergency
  admission. Emergency types (`EMERGENCY_TYPES`, matched on `HOSPITAL_ADMISSION//<type>`,
  case-insensitive): MIMIC-III `EMERGENCY`; MIMIC-IV `EW EMER.` and `DIRECT EMER.`; the
  synthetic cohort's `EMERGENCY`. MIMIC-III `URGENT`, MIMIC-IV `URGENT` / `OBSERVATION ADMIT`
  / `EU OBSERVATION` and elective types are not emergencies;
- negative: no next admission (no censoring, as EHRSHOT's readmission), a next admission after
  30 days, or a next admission within 30 days of another type. Only the next admission
  counts: an elective readmission followed by an emergency one is negative;
- exclusions: stays ending in death; stays whose next admission starts at or before this
  discharge (overlapping stays / a transfer at the very instant: the patient is in hospital).
Needs calendar gaps between stays (not offset-only data such as eICU).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from ehr.schema import ADMISSION_ID, ADMISSION_PREFIX, CODE, PREDICTION_TIME, SUBJECT_ID, TIME
from ehr.tasks.base import Task
from ehr.tasks.stays import stays

EMERGENCY_TYPES = ("EMERGENCY", "EW EMER.", "DIRECT EMER.")
PRESETS = {"next_30d": dict(days=30)}


def admission_types(events: pl.DataFrame, stay_frame: pl.DataFrame) -> pl.DataFrame:
    """Per stay (subject_id, stay): `admission_type`, the `<type>` of its `HOSPITAL_ADMISSION//`
    marker (the marker of the same admission id where ids exist, else the marker at its admit
    time; several at one instant: the first by code)."""
    cols = [SUBJECT_ID, TIME, CODE] + ([ADMISSION_ID] if ADMISSION_ID in events.columns else [])
    m = (events.select(cols).filter(pl.col(CODE).str.starts_with(ADMISSION_PREFIX))
         .with_columns(pl.col(CODE).str.slice(len(ADMISSION_PREFIX)).alias("admission_type")))
    if ADMISSION_ID not in m.columns:
        m = m.with_columns(pl.lit(None, dtype=pl.Int64).alias(ADMISSION_ID))
    by_time = (m.sort(SUBJECT_ID, TIME, CODE).unique(subset=[SUBJECT_ID, TIME], keep="first", maintain_order=True)
               .select(SUBJECT_ID, pl.col(TIME).alias("admit"), pl.col("admission_type").alias("_t_time")))
    by_id = (m.filter(pl.col(ADMISSION_ID).is_not_null()).sort(SUBJECT_ID, ADMISSION_ID, TIME, CODE)
             .unique(subset=[SUBJECT_ID, ADMISSION_ID], keep="first", maintain_order=True)
             .select(SUBJECT_ID, ADMISSION_ID, pl.col("admission_type").alias("_t_id")))
    s = stay_frame.select(SUBJECT_ID, "stay", "admit", ADMISSION_ID)
    return (s.join(by_id, on=[SUBJECT_ID, ADMISSION_ID], how="left")
            .join(by_time, on=[SUBJECT_ID, "admit"], how="left")
            .select(SUBJECT_ID, "stay", pl.coalesce("_t_id", "_t_time").alias("admission_type")))


def is_emergency(col: str = "admission_type") -> pl.Expr:
    return pl.col(col).str.to_uppercase().is_in(list(EMERGENCY_TYPES)).fill_null(False)


@dataclass
class EmergencyAdmission(Task):
    name: str = "emergency_admission"
    preset: str = "next_30d"
    kind: str = "binary"
    classes: list[str] = field(default_factory=lambda: ["no_emergency_admission", "emergency_admission"])
    days: int = 30

    def needs_calendar(self) -> bool:
        return True

    def describe(self) -> dict[str, str]:
        return {"prediction_time": "discharge of the stay",
                "input_window": "all history up to the prediction time (current stay included)",
                "exclusions": "stays ending in death; stays whose next admission starts by their discharge",
                "label": f"the next admission starts within {self.days} days of the discharge (<=) and is an "
                         f"emergency admission (HOSPITAL_ADMISSION// in {list(EMERGENCY_TYPES)}); no next "
                         "admission = negative (no censoring)"}

    def label(self, events: pl.DataFrame) -> pl.DataFrame:
        s = stays(events).sort(SUBJECT_ID, "admit", "stay")
        types = admission_types(events, s)
        s = (s.join(types, on=[SUBJECT_ID, "stay"], how="left").sort(SUBJECT_ID, "admit", "stay")
             .with_columns(pl.col("admit").shift(-1).over(SUBJECT_ID).alias("next_admit"),
                           is_emergency().shift(-1).over(SUBJECT_ID).alias("next_emergency")))
        s = s.filter(~pl.col("died"))
        s = s.filter(pl.col("next_admit").is_null() | (pl.col("next_admit") > pl.col("discharge")))
        within = (pl.col("next_admit") - pl.col("discharge")) <= pl.duration(days=self.days)
        pos = (within & pl.col("next_emergency")).fill_null(False)
        return self.finish(s.select(SUBJECT_ID, pl.col("discharge").alias(PREDICTION_TIME),
                                    pl.lit(None, dtype=pl.Datetime("us")).alias("input_start"),
                                    pos.alias("boolean_value"), pl.col("admit").alias("stay_start")))


def make(preset: str) -> EmergencyAdmission:
    if preset not in PRESETS:
        raise KeyError(f"emergency_admission presets: {sorted(PRESETS)}; got {preset!r}")
    return EmergencyAdmission(preset=preset, **PRESETS[preset])
