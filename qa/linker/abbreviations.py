"""A small curated table of clinical abbreviations -> (expansion, ICD-10-CM code).

Abbreviations are matched case-sensitively (token ORTH), so "ALL" (acute lymphoblastic
leukemia) never fires on the word "all". Each entry becomes two KB aliases of its code:
the abbreviation itself and its expansion. Ambiguous abbreviations (ASD, BPD, PD, CD, MS
in some contexts) are left out on purpose: a wrong code is worse than no code.
"""

from __future__ import annotations

from typing import NamedTuple


class Abbreviation(NamedTuple):
    short: str
    expansion: str
    code_id: str  # the code it stands for; resolved to the nearest existing ancestor at build time


def _icd10(short: str, expansion: str, code: str) -> Abbreviation:
    return Abbreviation(short, expansion, f"ICD10CM:{code}")


ABBREVIATIONS: tuple[Abbreviation, ...] = (
    # cardiovascular
    _icd10("MI", "myocardial infarction", "I21.9"),
    _icd10("AMI", "acute myocardial infarction", "I21.9"),
    _icd10("STEMI", "ST elevation myocardial infarction", "I21.3"),
    _icd10("NSTEMI", "non-ST elevation myocardial infarction", "I21.4"),
    _icd10("ACS", "acute coronary syndrome", "I24.9"),
    _icd10("CAD", "coronary artery disease", "I25.10"),
    _icd10("CHF", "congestive heart failure", "I50.9"),
    _icd10("HF", "heart failure", "I50.9"),
    _icd10("HTN", "hypertension", "I10"),
    _icd10("AF", "atrial fibrillation", "I48.91"),
    _icd10("AFib", "atrial fibrillation", "I48.91"),
    _icd10("DVT", "deep vein thrombosis", "I82.409"),
    _icd10("PE", "pulmonary embolism", "I26.99"),
    _icd10("PAD", "peripheral arterial disease", "I73.9"),
    _icd10("PVD", "peripheral vascular disease", "I73.9"),
    _icd10("AAA", "abdominal aortic aneurysm", "I71.4"),
    _icd10("HCM", "hypertrophic cardiomyopathy", "I42.2"),
    _icd10("DCM", "dilated cardiomyopathy", "I42.0"),
    _icd10("PAH", "pulmonary arterial hypertension", "I27.0"),
    # neurological
    _icd10("CVA", "cerebrovascular accident", "I63.9"),
    _icd10("TIA", "transient ischemic attack", "G45.9"),
    _icd10("SAH", "subarachnoid hemorrhage", "I60.9"),
    _icd10("ICH", "intracerebral hemorrhage", "I61.9"),
    _icd10("ALS", "amyotrophic lateral sclerosis", "G12.21"),
    # respiratory
    _icd10("COPD", "chronic obstructive pulmonary disease", "J44.9"),
    _icd10("ARDS", "acute respiratory distress syndrome", "J80"),
    _icd10("OSA", "obstructive sleep apnea", "G47.33"),
    _icd10("URI", "upper respiratory infection", "J06.9"),
    _icd10("CAP", "community acquired pneumonia", "J18.9"),
    _icd10("TB", "tuberculosis", "A15.9"),
    _icd10("CF", "cystic fibrosis", "E84.9"),
    # endocrine / metabolic
    _icd10("DM", "diabetes mellitus", "E11.9"),
    _icd10("T2DM", "type 2 diabetes mellitus", "E11.9"),
    _icd10("T1DM", "type 1 diabetes mellitus", "E10.9"),
    _icd10("DKA", "diabetic ketoacidosis", "E10.10"),
    _icd10("PCOS", "polycystic ovary syndrome", "E28.2"),
    # renal / urological
    _icd10("CKD", "chronic kidney disease", "N18.9"),
    _icd10("AKI", "acute kidney injury", "N17.9"),
    _icd10("ESRD", "end stage renal disease", "N18.6"),
    _icd10("UTI", "urinary tract infection", "N39.0"),
    _icd10("BPH", "benign prostatic hyperplasia", "N40.0"),
    # digestive
    _icd10("GERD", "gastroesophageal reflux disease", "K21.9"),
    _icd10("IBS", "irritable bowel syndrome", "K58.9"),
    _icd10("UC", "ulcerative colitis", "K51.90"),
    _icd10("NAFLD", "nonalcoholic fatty liver disease", "K76.0"),
    _icd10("PUD", "peptic ulcer disease", "K27.9"),
    # musculoskeletal / immune
    _icd10("RA", "rheumatoid arthritis", "M06.9"),
    _icd10("SLE", "systemic lupus erythematosus", "M32.9"),
    _icd10("OA", "osteoarthritis", "M19.90"),
    # haematological / infectious
    _icd10("DIC", "disseminated intravascular coagulation", "D65"),
    _icd10("ITP", "immune thrombocytopenic purpura", "D69.3"),
    _icd10("HUS", "hemolytic uremic syndrome", "D59.3"),
    _icd10("TTP", "thrombotic thrombocytopenic purpura", "M31.1"),
    _icd10("SCD", "sickle cell disease", "D57.1"),
    _icd10("HIV", "human immunodeficiency virus disease", "B20"),
    _icd10("ALL", "acute lymphoblastic leukemia", "C91.00"),
    _icd10("AML", "acute myeloid leukemia", "C92.00"),
    _icd10("CLL", "chronic lymphocytic leukemia", "C91.10"),
    _icd10("CML", "chronic myeloid leukemia", "C92.10"),
    # mental health
    _icd10("ADHD", "attention deficit hyperactivity disorder", "F90.9"),
    _icd10("PTSD", "post-traumatic stress disorder", "F43.10"),
    _icd10("OCD", "obsessive-compulsive disorder", "F42.9"),
    _icd10("MDD", "major depressive disorder", "F32.9"),
    _icd10("GAD", "generalized anxiety disorder", "F41.1"),
)


# Lay / short names that no ICD-10-CM title or inclusion term spells out on its own
# ("diabetes" alone is only the title of the E08-E13 range). Matched case-insensitively.
COMMON_NAMES: tuple[tuple[str, str], ...] = (
    ("diabetes", "ICD10CM:E11.9"),
    ("type 2 diabetes", "ICD10CM:E11.9"),
    ("type 1 diabetes", "ICD10CM:E10.9"),
    ("heart attack", "ICD10CM:I21.9"),
    ("stroke", "ICD10CM:I63.9"),
    ("high cholesterol", "ICD10CM:E78.00"),
    ("kidney stones", "ICD10CM:N20.0"),
    ("flu", "ICD10CM:J11.1"),
    ("blood clot", "ICD10CM:I74.9"),
)


def common_names(systems: tuple[str, ...] | list[str] | None = None) -> list[tuple[str, str]]:
    keep = None if systems is None else set(systems)
    return [(n, c) for n, c in COMMON_NAMES if keep is None or c.split(":", 1)[0] in keep]


def abbreviation_table(systems: tuple[str, ...] | list[str] | None = None) -> list[Abbreviation]:
    """The curated entries, restricted to codes of `systems` (None = all)."""
    if systems is None:
        return list(ABBREVIATIONS)
    keep = set(systems)
    return [a for a in ABBREVIATIONS if a.code_id.split(":", 1)[0] in keep]
