"""New diagnosis (EHRSHOT style): is a condition first diagnosed within a year?

A condition is a set of ICD categories (ICD-10-CM and ICD-9-CM code prefixes; EHRSHOT uses
SNOMED roots, which the offline vocabulary cannot reproduce, so these are the ICD categories
of the same conditions). Prediction at 23:59 on the discharge day of each stay (EHRSHOT);
input = all history up to then. Label: the subject's FIRST diagnosis of the condition falls in
(prediction + 1 day, prediction + 365 days].
Exclusions: prediction times at or after the first diagnosis (already diagnosed); samples whose
first diagnosis falls in (prediction, prediction + 1 day] (the diagnosis is part of the
current care episode, neither a clean positive nor a negative); stays ending in death.
Censoring:
- `ehrshot_365d`: none, as EHRSHOT: a subject whose record ends within the year counts as
  negative;
- `censored_365d`: a negative whose record ends before the window does (last event before
  prediction + 365 days) is dropped unless the record ends in death (death settles it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from ehr.schema import CODE, PREDICTION_TIME, SUBJECT_ID, TIME
from ehr.tasks.base import Task
from ehr.tasks.ccs import parse_icd_dx
from ehr.tasks.stays import DIAGNOSIS_PATTERN, end_of_day, family_events, stays, subject_bounds

# condition -> (ICD-10-CM category prefixes, ICD-9-CM prefixes), undotted
CONDITIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "hypertension": (("I10", "I11", "I12", "I13", "I15", "I16"), ("401", "402", "403", "404", "405")),
    "hyperlipidemia": (("E78",), ("272",)),
    "acute_mi": (("I21", "I22"), ("410",)),
    "pancreatic_cancer": (("C25",), ("157",)),
    "celiac": (("K900",), ("5790",)),
    "lupus": (("M32",), ("7100",)),
}
PRESETS = {"ehrshot_365d": dict(censor=False), "censored_365d": dict(censor=True)}


def condition_expr(condition: str, col: str = CODE) -> pl.Expr:
    """True for diagnosis codes of `condition` (any spelling the project writes)."""
    ten, nine = CONDITIONS[condition]
    version, icd = parse_icd_dx(col)
    return (((version == "10") & pl.any_horizontal([icd.str.starts_with(p) for p in ten]))
            | ((version == "9") & pl.any_horizontal([icd.str.starts_with(p) for p in nine]))).fill_null(False)


@dataclass
class NewDiagnosis(Task):
    name: str = "new_diagnosis_hypertension"
    preset: str = "ehrshot_365d"
    kind: str = "binary"
    classes: list[str] = field(default_factory=lambda: ["not_diagnosed", "diagnosed"])
    condition: str = "hypertension"
    gap_days: int = 1
    horizon_days: int = 365
    censor: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.condition not in CONDITIONS:
            raise KeyError(f"conditions: {sorted(CONDITIONS)}; got {self.condition!r}")
        self.name = f"new_diagnosis_{self.condition}"

    def needs_calendar(self) -> bool:
        return True

    def required_codes(self) -> dict[str, str]:
        return {**super().required_codes(), "ICD diagnoses": DIAGNOSIS_PATTERN}

    def describe(self) -> dict[str, str]:
        ten, nine = CONDITIONS[self.condition]
        return {"prediction_time": "23:59 on the discharge day of each stay",
                "input_window": "all history up to the prediction time",
                "exclusions": "already diagnosed by the prediction time; first diagnosis within "
                              f"{self.gap_days} day after it; stays ending in death"
                              + ("; negatives whose record ends before the window (unless by death)" if self.censor else ""),
                "label": f"first {self.condition} diagnosis (ICD-10-CM {'/'.join(ten)}, ICD-9-CM {'/'.join(nine)}) in "
                         f"(t + {self.gap_days} d, t + {self.horizon_days} d]",
                "censoring": "drop negatives with follow-up shorter than the window" if self.censor
                             else "none (record ending early = negative, as EHRSHOT)"}

    def label(self, events: pl.DataFrame) -> pl.DataFrame:
        s = stays(events).filter(~pl.col("died"))
        dx = family_events(events).filter(pl.col("fam") == "dx")
        hit = dx.select(pl.col(CODE).unique()).filter(condition_expr(self.condition))[CODE]   # regex on distinct codes
        first = (dx.filter(pl.col(CODE).is_in(hit.implode()))
                 .group_by(SUBJECT_ID).agg(pl.col(TIME).min().alias("first_dx")))
        last = subject_bounds(events)
        s = (s.with_columns(end_of_day("discharge").alias(PREDICTION_TIME))
             .join(first, on=SUBJECT_ID, how="left").join(last, on=SUBJECT_ID, how="left"))
        t = pl.col(PREDICTION_TIME)
        lo, hi = t + pl.duration(days=self.gap_days), t + pl.duration(days=self.horizon_days)
        fd = pl.col("first_dx")
        s = s.filter(fd.is_null() | (fd > lo))          # already diagnosed, or within the gap: dropped
        s = s.with_columns((fd.is_not_null() & (fd <= hi)).alias("boolean_value"))
        if self.censor:
            followed = (pl.col("last_event") >= hi) | pl.col("death_t").is_not_null()
            s = s.filter(pl.col("boolean_value") | followed)
        # several stays discharged the same day give one prediction time: keep one sample
        s = s.sort(SUBJECT_ID, "admit").unique(subset=[SUBJECT_ID, PREDICTION_TIME], keep="first", maintain_order=True)
        return self.finish(s.select(SUBJECT_ID, PREDICTION_TIME, pl.lit(None, dtype=pl.Datetime("us")).alias("input_start"),
                                    "boolean_value", pl.col("admit").alias("stay_start")))


def make(preset: str, condition: str = "hypertension") -> NewDiagnosis:
    if preset not in PRESETS:
        raise KeyError(f"new_diagnosis presets: {sorted(PRESETS)}; got {preset!r}")
    return NewDiagnosis(preset=preset, condition=condition, **PRESETS[preset])
