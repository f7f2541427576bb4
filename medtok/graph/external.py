"""Optional external graphs joined onto the code graph (all by path, nothing downloaded):

- MONDO SSSOM mappings (`*.sssom.tsv[.gz]`): a concept node per MONDO disease that maps to a
  code in the vocabulary, with `xref` edges code -> MONDO;
- PrimeKG `kg.csv` (12-column schema: relation, display_relation, x_index, x_id, x_type,
  x_name, x_source, y_...): its nodes join the vocabulary through MONDO ids (diseases) and
  ATC names (drugs, by exact lower-cased ingredient name);
- Hetionet (nodes TSV + SIF edges): compounds join ATC by name, diseases join MONDO by label.

External edges are kept only when at least one endpoint joins the vocabulary (or an already
attached concept): anything farther is outside every code's 2-hop context anyway.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from medtok.codes.normalize import normalize_code
from medtok.codes.vocabulary import COLUMNS, Vocabulary
from medtok.graph.graph import CodeGraph

log = logging.getLogger(__name__)


class _Attacher:
    def __init__(self, vocab: Vocabulary, graph: CodeGraph):
        self.codes = vocab.codes
        self.index = dict(vocab._index)
        self.new_rows: list[dict] = []
        self.new_edges: list[tuple[int, int, str]] = []
        self.stats: Counter = Counter()
        atc = self.codes[(self.codes["system"] == "ATC") & (self.codes["code"].str.len() == 7)]
        self.atc_by_name = {d.lower(): cid for cid, d in zip(atc["code_id"], atc["description"])}
        self.mondo_by_label: dict[str, str] = {}
        self.graph = graph
        self.anchored_below = len(self.codes)  # vocabulary rows; MONDO concepts are anchored too

    def anchored(self, i: int | None) -> bool:
        return i is not None and (i < self.anchored_below or self.new_rows[i - len(self.codes)]["system"] == "MONDO")

    def node(self, code_id: str, description: str, system: str, create: bool = True) -> int | None:
        if code_id in self.index:
            return self.index[code_id]
        if not create or not str(description).strip():
            return None
        self.index[code_id] = len(self.codes) + len(self.new_rows)
        self.new_rows.append(dict(code_id=code_id, system=system, code=code_id.split(":", 1)[1],
                                  description=str(description).strip(), parents=[], synonyms=[], kind="concept"))
        self.stats[f"nodes_added_{system}"] += 1
        return self.index[code_id]

    def edge(self, a: int | None, b: int | None, etype: str, source: str) -> None:
        if a is not None and b is not None and a != b:
            self.new_edges.append((a, b, etype))
            self.stats[f"edges_{source}"] += 1

    # ---- sources -------------------------------------------------------
    def mondo(self, directory: Path) -> None:
        for f in sorted(Path(directory).glob("*.sssom.tsv*")):
            df = pd.read_csv(f, sep="\t", comment="#", dtype=str)
            for subj, label, obj in zip(df["subject_id"], df["subject_label"], df["object_id"]):
                if not isinstance(label, str):
                    continue
                self.mondo_by_label.setdefault(label.lower(), subj)
                target = self._resolve_code(obj)
                if target is not None:
                    self.edge(target, self.node(subj, label, "MONDO"), "xref", "mondo")

    def _resolve_code(self, code_id: str) -> int | None:
        if not isinstance(code_id, str) or ":" not in code_id:
            return None
        sys_, code = code_id.split(":", 1)
        sys_ = {"ICD9": "ICD9CM", "ICD10": "ICD10CM"}.get(sys_, sys_)
        norm = normalize_code(code, sys_)
        return self.index.get(f"{sys_}:{norm}") if norm else None

    def _primekg_node(self, nid, ntype, name, source) -> tuple[str, str, str]:
        if source == "MONDO":
            return f"MONDO:{int(float(nid)):07d}" if str(nid).replace(".", "").isdigit() else f"MONDO:{nid}", name, "MONDO"
        if ntype == "drug" and str(name).lower() in self.atc_by_name:
            return self.atc_by_name[str(name).lower()], name, "ATC"
        sys_ = str(source).upper().replace(" ", "_")
        return f"{sys_}:{nid}", f"{name} ({ntype})", sys_

    def primekg(self, path: Path) -> None:
        df = pd.read_csv(path, dtype=str, low_memory=False)
        for r in tqdm(df.itertuples(index=False), total=len(df), desc="PrimeKG", leave=False):
            x = self._primekg_node(r.x_id, r.x_type, r.x_name, r.x_source)
            y = self._primekg_node(r.y_id, r.y_type, r.y_name, r.y_source)
            xi, yi = self.index.get(x[0]), self.index.get(y[0])
            if not (self.anchored(xi) or self.anchored(yi)):
                self.stats["primekg_edges_not_joined"] += 1
                continue
            self.edge(xi if xi is not None else self.node(*x), yi if yi is not None else self.node(*y),
                      "kg_relation", "primekg")

    def hetionet(self, directory: Path) -> None:
        directory = Path(directory)
        nodes = pd.read_csv(next(directory.glob("*nodes.tsv*")), sep="\t", dtype=str)
        names = dict(zip(nodes["id"], nodes["name"]))
        kinds = dict(zip(nodes["id"], nodes["kind"]))
        edges = pd.read_csv(next(directory.glob("*.sif*")), sep="\t", dtype=str)

        def resolve(nid: str) -> tuple[str, str, str]:
            kind, name = kinds.get(nid, "Node"), names.get(nid, nid)
            if kind == "Compound" and str(name).lower() in self.atc_by_name:
                return self.atc_by_name[str(name).lower()], name, "ATC"
            if kind == "Disease" and str(name).lower() in self.mondo_by_label:
                return self.mondo_by_label[str(name).lower()], name, "MONDO"
            return f"HETIO:{nid}", f"{name} ({kind.lower()})", "HETIONET"

        for s, meta, t in tqdm(edges.itertuples(index=False), total=len(edges), desc="Hetionet", leave=False):
            a, b = resolve(s), resolve(t)
            ai, bi = self.index.get(a[0]), self.index.get(b[0])
            if not (self.anchored(ai) or self.anchored(bi)):
                self.stats["hetionet_edges_not_joined"] += 1
                continue
            self.edge(ai if ai is not None else self.node(*a), bi if bi is not None else self.node(*b),
                      "kg_relation", "hetionet")

    def result(self) -> tuple[Vocabulary, CodeGraph, dict]:
        codes = pd.concat([self.codes, pd.DataFrame(self.new_rows, columns=COLUMNS)], ignore_index=True)
        old = self.graph.to_frame()
        new = pd.DataFrame(self.new_edges, columns=["src", "dst", "type"])
        edges = pd.concat([old, new], ignore_index=True).drop_duplicates()
        return Vocabulary(codes), CodeGraph.from_frame(len(codes), edges), dict(self.stats)


def attach_external(vocab: Vocabulary, graph: CodeGraph, mondo_dir=None, primekg_file=None, hetionet_dir=None,
                    progress: bool = True) -> tuple[Vocabulary, CodeGraph, dict]:
    att = _Attacher(vocab, graph)
    if mondo_dir:
        att.mondo(Path(mondo_dir))
    if primekg_file:
        att.primekg(Path(primekg_file))
    if hetionet_dir:
        att.hetionet(Path(hetionet_dir))
    return att.result()
