"""The knowledge-graph facts behind the relational "which drug treats ..." questions.

Hetionet's Compound-treats-Disease edges (CtD) joined to ICD-10-CM through MONDO: a Hetionet
disease joins a MONDO concept by exact (case-folded) label, as `medtok.graph.external` joins
them when the KG is attached to the code graph, and the MONDO concept maps to ICD-10-CM codes
through the SSSOM `exactMatch` and `hasDbXref` files. Nothing here is downloaded: the files are
read from `../shared/data/kg` (or a given directory) and the facts are empty when it is absent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("qa.datasets")

PREDICATES = ("skos:exactMatch", "oboInOwl:hasDbXref")  # broad/narrow/related/close are not the same disease


@dataclass
class TreatsFacts:
    """disease_codes: Hetionet disease id -> ICD-10-CM code ids (as the SSSOM files spell them);
    treats: Hetionet disease id -> compound ids; compounds: compound id -> name (every compound
    with at least one `treats` edge, joined or not: the distractor pool)."""

    disease_codes: dict[str, set[str]] = field(default_factory=dict)
    treats: dict[str, set[str]] = field(default_factory=dict)
    compounds: dict[str, str] = field(default_factory=dict)
    disease_names: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.treats)


def load_treats_facts(kg_dir: str | Path | None) -> TreatsFacts:
    """Facts from `kg_dir` (with `mondo/*.sssom.tsv*` and `hetionet/`); empty when absent."""
    import pandas as pd

    if not kg_dir:
        return TreatsFacts()
    root = Path(kg_dir)
    mondo_files = sorted((root / "mondo").glob("*.sssom.tsv*"))
    het = root / "hetionet"
    node_files, edge_files = sorted(het.glob("*nodes.tsv*")), sorted(het.glob("*.sif*"))
    if not (mondo_files and node_files and edge_files):
        log.info("relational QA: no MONDO/Hetionet files under %s; KG question types skipped", root)
        return TreatsFacts()
    label_to_mondo: dict[str, str] = {}
    mondo_to_icd: dict[str, set[str]] = {}
    for f in mondo_files:
        df = pd.read_csv(f, sep="\t", comment="#", dtype=str)
        for subj, label, pred, obj in zip(df["subject_id"], df["subject_label"], df["predicate_id"], df["object_id"]):
            if isinstance(label, str):
                label_to_mondo.setdefault(label.casefold(), subj)
            if pred in PREDICATES and isinstance(obj, str) and obj.startswith("ICD10CM:"):
                mondo_to_icd.setdefault(subj, set()).add(obj)
    nodes = pd.read_csv(node_files[0], sep="\t", dtype=str)
    names = dict(zip(nodes["id"], nodes["name"]))
    edges = pd.read_csv(edge_files[0], sep="\t", dtype=str)
    ctd = edges[edges["metaedge"] == "CtD"]
    facts = TreatsFacts()
    for compound, disease in zip(ctd["source"], ctd["target"]):
        facts.compounds[compound] = names.get(compound, compound)
        mondo = label_to_mondo.get(str(names.get(disease, "")).casefold())
        codes = mondo_to_icd.get(mondo, set()) if mondo else set()
        if codes:
            facts.disease_codes[disease] = set(codes)
            facts.disease_names[disease] = names[disease]
            facts.treats.setdefault(disease, set()).add(compound)
    log.info("relational QA: %d Hetionet diseases with treats edges join ICD-10-CM (%d compounds)",
             len(facts.treats), len(facts.compounds))
    return facts
