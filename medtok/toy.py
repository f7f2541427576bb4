"""A tiny synthetic vocabulary + graph for unit tests (no package data needed).

Two diagnosis systems mirroring ICD-10-CM / ICD-9-CM shape: chapters -> categories ->
leaf codes, siblings share words in their descriptions, and each ICD-9-like leaf maps to
the ICD-10-like leaf with the same meaning (GEM-style edges both directions).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medtok.codes.vocabulary import Vocabulary
from medtok.graph.graph import CodeGraph

ORGANS = ["heart", "lung", "kidney", "liver", "brain", "skin", "bone", "eye"]
LESIONS = ["infection", "tumor", "injury", "failure", "inflammation", "cyst"]
SITES = ["left", "right", "bilateral", "unspecified"]


def toy_vocabulary(seed: int = 0) -> tuple[Vocabulary, CodeGraph]:
    rng = np.random.default_rng(seed)
    rows, edges = [], []

    def add(cid, system, code, desc, parents, kind="code", synonyms=()):
        rows.append(dict(code_id=cid, system=system, code=code, description=desc,
                         parents=list(parents), synonyms=list(synonyms), kind=kind))

    for o, organ in enumerate(ORGANS):
        ch10, ch9 = f"ICD10CM:CH{o:02d}", f"ICD9CM:{100 * (o + 1)}-{100 * (o + 1) + 99}"
        add(ch10, "ICD10CM", f"CH{o:02d}", f"Diseases of the {organ}", [], "group")
        add(ch9, "ICD9CM", ch9.split(":")[1], f"Diseases of the {organ}", [], "group")
        for l, lesion in enumerate(LESIONS):
            cat10 = f"{chr(65 + o)}{l:02d}"
            cat9 = f"{100 * (o + 1) + l:03d}"
            add(f"ICD10CM:{cat10}", "ICD10CM", cat10, f"{lesion.capitalize()} of {organ}", [ch10], "group")
            add(f"ICD9CM:{cat9}", "ICD9CM", cat9, f"{lesion.capitalize()} of {organ}", [ch9], "group")
            for s, site in enumerate(SITES):
                c10, c9 = f"{cat10}.{s}", f"{cat9}.{s}"
                desc = f"{lesion.capitalize()} of {site} {organ}"
                add(f"ICD10CM:{c10}", "ICD10CM", c10, desc, [f"ICD10CM:{cat10}"],
                    synonyms=[f"{site} {organ} {lesion}"])
                add(f"ICD9CM:{c9}", "ICD9CM", c9, desc.lower(), [f"ICD9CM:{cat9}"])
                edges.append((f"ICD9CM:{c9}", f"ICD10CM:{c10}", "gem_icd9_icd10"))
                edges.append((f"ICD10CM:{c10}", f"ICD9CM:{c9}", "gem_icd10_icd9"))
    codes = pd.DataFrame(rows)
    vocab = Vocabulary(codes)
    for cid, parents in zip(codes["code_id"], codes["parents"]):
        edges.extend((cid, p, "is_a") for p in parents)
    idx = vocab._index
    frame = pd.DataFrame({"src": [idx[a] for a, _, _ in edges], "dst": [idx[b] for _, b, _ in edges],
                          "type": [t for _, _, t in edges]})
    frame = frame.sample(frac=1.0, random_state=int(rng.integers(1 << 31))).reset_index(drop=True)
    return vocab, CodeGraph.from_frame(len(codes), frame)
