"""The knowledge-graph facts behind the relational questions only a KG answers.

Hetionet disease edges joined to ICD-10-CM through MONDO: a Hetionet disease joins a MONDO
concept by exact (case-folded) label, as `medtok.graph.external` joins them when the KG is
attached to the code graph, and the MONDO concept maps to ICD-10-CM codes through the SSSOM
`exactMatch` and `hasDbXref` files. One question type per Hetionet metaedge (`KG_RELATIONS`):

    hetionet_treats    Compound -treats-> Disease      (CtD)  "which drug treats ..."
    hetionet_symptom   Disease -presents-> Symptom     (DpS)  "which symptom does ... present"
    hetionet_anatomy   Disease -localizes-> Anatomy    (DlA)  "where does ... localize"
    hetionet_gene      Disease -associates-> Gene      (DaG)  "which gene is associated with ..."

Nothing here is downloaded: the files are read from `../shared/data/kg` (or a given
directory) and the facts are empty when it is absent. The shared Hetionet file holds up to
5,000 edges per metaedge (all of CtD, DpS, DlA; 5,000 of DaG's 12,623), so "associated" is
"associated in that sample"; a missing edge makes a distractor possibly right, never a
right answer wrong.
"""

from __future__ import annotations

import logging
from collections import namedtuple
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("qa.datasets")

PREDICATES = ("skos:exactMatch", "oboInOwl:hasDbXref")  # broad/narrow/related/close are not the same disease

# question type -> Hetionet metaedge, and whether the disease is the edge's source
KGRelation = namedtuple("KGRelation", "metaedge disease_is_source")
KG_RELATIONS = {
    "hetionet_treats": KGRelation("CtD", False),
    "hetionet_symptom": KGRelation("DpS", True),
    "hetionet_anatomy": KGRelation("DlA", True),
    "hetionet_gene": KGRelation("DaG", True),
}


@dataclass
class KGFacts:
    """disease_codes: Hetionet disease id -> ICD-10-CM code ids (as the SSSOM files spell them);
    relations: metaedge -> Hetionet disease id (joined ones only) -> the other end's node ids;
    pools: metaedge -> every node at the other end of that metaedge, joined or not (the
    distractor pool); names: node id -> name."""

    disease_codes: dict[str, set[str]] = field(default_factory=dict)
    relations: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    pools: dict[str, set[str]] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return any(self.relations.values())


def load_kg_facts(kg_dir: str | Path | None, metaedges=tuple(r.metaedge for r in KG_RELATIONS.values())) -> KGFacts:
    """Facts from `kg_dir` (with `mondo/*.sssom.tsv*` and `hetionet/`); empty when absent."""
    import pandas as pd

    if not kg_dir:
        return KGFacts()
    root = Path(kg_dir)
    mondo_files = sorted((root / "mondo").glob("*.sssom.tsv*"))
    het = root / "hetionet"
    node_files, edge_files = sorted(het.glob("*nodes.tsv*")), sorted(het.glob("*.sif*"))
    if not (mondo_files and node_files and edge_files):
        log.info("relational QA: no MONDO/Hetionet files under %s; KG question types skipped", root)
        return KGFacts()
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
    facts = KGFacts()
    by_metaedge = {r.metaedge: r for r in KG_RELATIONS.values()}
    for me in metaedges:
        rel = by_metaedge[me]
        sub = edges[edges["metaedge"] == me]
        diseases, others = (sub["source"], sub["target"]) if rel.disease_is_source else (sub["target"], sub["source"])
        facts.relations[me], facts.pools[me] = {}, set()
        for disease, other in zip(diseases, others):
            facts.pools[me].add(other)
            facts.names[other] = names.get(other, other)
            mondo = label_to_mondo.get(str(names.get(disease, "")).casefold())
            codes = mondo_to_icd.get(mondo, set()) if mondo else set()
            if codes:
                facts.disease_codes[disease] = set(codes)
                facts.names[disease] = names[disease]
                facts.relations[me].setdefault(disease, set()).add(other)
        log.info("relational QA: %s: %d Hetionet diseases join ICD-10-CM (%d nodes at the other end)",
                 me, len(facts.relations[me]), len(facts.pools[me]))
    return facts
