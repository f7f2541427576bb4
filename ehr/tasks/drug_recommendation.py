"""Drug recommendation: which of the paper's five drugs does this stay give?

Preset `paper_5drugs`: multi-label over vancomycin (J01XA01), levofloxacin (J01MA12), heparin
(B01AB01; the paper says heparin sodium), metoprolol (C07AB02) and atorvastatin (C10AA05).
A drug matches by ingredient name in a `MEDICATION//<name>` code (word match, any salt or form:
"Metoprolol Tartrate", "Heparin Sodium") or by its ATC code in an `ATC:` event. Heparin flushes
and lock solutions (line care, not anticoagulation) are not heparin here.
Prediction at the stay's discharge (as PyHealth: the visit's diagnoses and procedures are the
input); input = all history up to the discharge minus the current stay's drug events
(`MEDICATION//`, `ATC:` from its admission on), so its drugs are never in the input; earlier
stays' drugs are. Excluded: stays without a diagnosis, a procedure or a drug (PyHealth).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from ehr.schema import ATC_PREFIX, CODE, MEDICATION_PREFIX, PREDICTION_TIME, SUBJECT_ID, TIME
from ehr.tasks.base import Task
from ehr.tasks.stays import assign_stay, family_events, is_drug, stay_code_flags, stays

# name, ingredient pattern on the lower-cased MEDICATION// code, ATC code
DRUGS = [
    ("vancomycin", r"\bvancomycin\b", "J01XA01"),
    ("levofloxacin", r"\blevofloxacin\b", "J01MA12"),
    ("heparin", r"\bheparin\b", "B01AB01"),
    ("metoprolol", r"\bmetoprolol\b", "C07AB02"),
    ("atorvastatin", r"\batorvastatin\b", "C10AA05"),
]
NOT_HEPARIN = r"\b(flush|lock)\b"
PRESETS = {"paper_5drugs": dict(require_codes=True)}


def drug_match_exprs(col: str = CODE) -> list[pl.Expr]:
    """One boolean expression per drug (in DRUGS order) over a code column."""
    name = pl.col(col).str.strip_prefix(MEDICATION_PREFIX).str.to_lowercase()
    is_med = pl.col(col).str.starts_with(MEDICATION_PREFIX)
    out = []
    for drug, pattern, atc in DRUGS:
        by_name = is_med & name.str.contains(pattern)
        if drug == "heparin":
            by_name = by_name & ~name.str.contains(NOT_HEPARIN)
        out.append((by_name | (pl.col(col) == f"{ATC_PREFIX}{atc}")).alias(drug))
    return out


@dataclass
class DrugRecommendation(Task):
    name: str = "drug_recommendation"
    preset: str = "paper_5drugs"
    kind: str = "multilabel"
    classes: list[str] = field(default_factory=lambda: [d[0] for d in DRUGS])
    require_codes: bool = True

    def required_codes(self) -> dict[str, str]:
        return {**super().required_codes(), "drug": f"^({MEDICATION_PREFIX}|{ATC_PREFIX})"}

    def describe(self) -> dict[str, str]:
        return {"prediction_time": "discharge of the stay",
                "input_window": "all history up to the discharge, minus the current stay's drug events",
                "exclusions": "stays without a diagnosis, a procedure or a drug" if self.require_codes
                              else "stays without a drug",
                "label": "vancomycin, levofloxacin, heparin, metoprolol, atorvastatin given in the stay "
                         "(ingredient name or ATC J01XA01, J01MA12, B01AB01, C07AB02, C10AA05)"}

    def input_exclusion(self) -> pl.Expr:
        # the current stay's drugs: from its admission on, and any row its admission id names
        # (a drug the source dates before the stay still belongs to it)
        same_stay = (pl.col("admission_id") == pl.col("stay_admission_id")).fill_null(False)
        return is_drug() & ((pl.col(TIME) >= pl.col("stay_start")) | same_stay)

    def label(self, events: pl.DataFrame) -> pl.DataFrame:
        all_stays = stays(events)
        s = all_stays.join(stay_code_flags(events), on=[SUBJECT_ID, "stay"], how="left")
        keep = (pl.col("has_dx") & pl.col("has_px") & pl.col("has_drug")) if self.require_codes else pl.col("has_drug")
        s = s.filter(keep)
        names = [d[0] for d in DRUGS]
        drugs = family_events(events).filter(pl.col("fam") == "drug").select(SUBJECT_ID, TIME, CODE, "admission_id")
        matched = drugs.select(pl.col(CODE).unique()).with_columns(drug_match_exprs()).filter(pl.any_horizontal(names))
        drugs = drugs.join(matched, on=CODE, how="inner")   # patterns run on distinct codes only
        hit = (assign_stay(drugs, all_stays, by="admit").filter(pl.col("stay").is_not_null())
               .group_by(SUBJECT_ID, "stay").agg([pl.col(n).any() for n in names]))
        s = (s.join(hit, on=[SUBJECT_ID, "stay"], how="left")
             .with_columns(pl.concat_list([pl.col(n).fill_null(False).cast(pl.Int8) for n in names]).alias("labels")))
        return self.finish(s.select(SUBJECT_ID, pl.col("discharge").alias(PREDICTION_TIME),
                                    pl.lit(None, dtype=pl.Datetime("us")).alias("input_start"),
                                    "labels", pl.col("admit").alias("stay_start"),
                                    pl.col("admission_id").alias("stay_admission_id")))


def make(preset: str) -> DrugRecommendation:
    if preset not in PRESETS:
        raise KeyError(f"drug_recommendation presets: {sorted(PRESETS)}; got {preset!r}")
    return DrugRecommendation(preset=preset, **PRESETS[preset])
