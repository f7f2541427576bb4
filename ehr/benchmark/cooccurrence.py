"""The graphs of HICD-Graph (issue 22; Thukral et al. 2026): a diagnosis co-occurrence graph
weighted by PMI plus ancestor edges at the enabled hierarchy levels, or, as the graph-source
variant, the vocabulary's own knowledge graph.

Nodes: every diagnosis code of the dataset's code space (`ICD9CM:` / `ICD10CM:`; seen in
training or not), then the ancestor nodes (level keys, `ehr.benchmark.hierarchy`: G0 chapter,
G1 block, G2 3-character category, for ICD-10-CM and ICD-9-CM alike) of the enabled levels.

- PMI edges (`pmi_edges`): counted on the TRAINING split only. A visit = the distinct
  diagnosis codes of one visit (the sequence's `visit_pos` groups) of one training subject;
  each training subject is counted once, through its sample with the longest input (its
  latest history; a history cut at `max_len` loses its oldest visits). For codes i != j:
  PMI(i, j) = log(n_ij N / (n_i n_j)), N visits, n_i visits with i, n_ij visits with both;
  an edge when n_ij >= `min_count` (default `PMI_MIN_COUNT` = 2, stated) and PMI > 0
  (positive PMI, as TextGCN); weight = PMI.
- Ancestor edges (`ancestor_edges`): code -> each of its ancestor nodes at the enabled
  levels, weight 1 (uniform); a level key equal to the code itself (a 3-character code is its
  own category) adds no edge. A code never seen in training has no PMI edge but keeps its
  ancestor edges, so the GCN embeds it inductively through its ancestors.
- Knowledge-graph source (`vocabulary_graph`): the edges MedTok trains on (`is_a`, the GEM
  maps, `in_group`; optionally `xref` / `kg_relation` where a KG-joined vocabulary has them)
  among the vocabulary nodes within `hops` of the space's diagnosis codes, weight 1.
Edges are undirected (both directions stored for the GCN), no self loops (GCNConv adds them).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from ehr.benchmark.features import SequenceData

PMI_MIN_COUNT = 2
GRAPH_DX_PREFIXES = ("ICD9CM:", "ICD10CM:")
KG_EDGE_TYPES = ("is_a", "gem_icd9_icd10", "gem_icd10_icd9", "in_group")
KG_JOINED_EDGE_TYPES = KG_EDGE_TYPES + ("xref", "kg_relation")


@dataclass
class HICDGraph:
    """Nodes 0..n_codes-1 are the graph codes (`code_index`: their CodeSpace indices), then the
    other nodes (`node_names`). `edge_index` [2, E] holds both directions; `code_node` [V] maps a
    CodeSpace index to its node (-1: not in the graph)."""

    node_names: list
    code_index: np.ndarray
    code_node: np.ndarray
    edge_index: np.ndarray
    edge_weight: np.ndarray
    info: dict = field(default_factory=dict)

    @property
    def num_nodes(self) -> int:
        return len(self.node_names)

    def fingerprint(self) -> str:
        h = hashlib.blake2b(digest_size=8)
        h.update("\n".join(map(str, self.node_names)).encode())
        h.update(np.ascontiguousarray(self.edge_index, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(self.edge_weight, dtype=np.float64).round(10).tobytes())
        return h.hexdigest()


def graph_codes(codes) -> np.ndarray:
    """[V] bool: the CodeSpace entries that are diagnosis codes (graph nodes)."""
    return np.array([str(c).startswith(GRAPH_DX_PREFIXES) for c in codes], dtype=bool)


def training_visits(data: SequenceData, is_node: np.ndarray) -> list[np.ndarray]:
    """Distinct graph-code indices of every visit of every TRAINING subject (one sample per
    subject: its longest input; ties -> the latest sample)."""
    tr = data.rows("train")
    if not len(tr):
        return []
    # per subject the training row with the longest input (stable: the last among equals)
    order = tr[np.lexsort((np.arange(len(tr)), data.length[tr], data.subject_id[tr]))]
    subj = data.subject_id[order]
    last = np.r_[subj[1:] != subj[:-1], True]
    visits = []
    for r in order[last]:
        n = int(min(data.length[r], data.codes.shape[1]))
        c, v = data.codes[r, :n], data.visit_pos[r, :n]
        keep = is_node[c]
        c, v = c[keep], v[keep]
        for vis in np.unique(v):
            visits.append(np.unique(c[v == vis]))
    return visits


def pmi_edges(visits: list[np.ndarray], min_count: int = PMI_MIN_COUNT) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """(i [E], j [E] with i < j, PMI weight [E], counts) over code ids in `visits`."""
    N = len(visits)
    single: dict[int, int] = {}
    pair: dict[tuple[int, int], int] = {}
    for vis in visits:
        vis = np.unique(np.asarray(vis, dtype=np.int64))
        for a in vis.tolist():
            single[a] = single.get(a, 0) + 1
        for x in range(len(vis)):
            for y in range(x + 1, len(vis)):
                k = (int(vis[x]), int(vis[y]))
                pair[k] = pair.get(k, 0) + 1
    src, dst, w = [], [], []
    below = nonpos = 0
    for (a, b), n in sorted(pair.items()):
        if n < min_count:
            below += 1
            continue
        pmi = np.log(n * N / (single[a] * single[b]))
        if pmi <= 0:
            nonpos += 1
            continue
        src.append(a)
        dst.append(b)
        w.append(pmi)
    info = {"visits": N, "pairs": len(pair), "pairs_below_min_count": below, "pairs_pmi_not_positive": nonpos,
            "pmi_edges": len(src), "min_count": int(min_count)}
    return np.array(src, np.int64), np.array(dst, np.int64), np.array(w, np.float64), info


def ancestor_edges(levels: np.ndarray, code_rows: np.ndarray, enabled=(1, 1, 1), codes=None) -> tuple[list, np.ndarray, np.ndarray]:
    """(ancestor keys (sorted), code position [E] into `code_rows`, ancestor position [E]) for
    the enabled levels (G0, G1, G2) of `levels[code_rows]`; a missing level adds no edge, nor
    does a level key equal to the code itself (`codes` given: a 3-character code such as
    ICD10CM:I10 is its own category, not its ancestor)."""
    def ok(r, j):
        k = levels[r, j]
        return enabled[j] and k is not None and (codes is None or k != codes[r])

    keys = sorted({levels[r, j] for r in code_rows for j in range(3) if ok(r, j)})
    pos = {k: i for i, k in enumerate(keys)}
    a, b = [], []
    for i, r in enumerate(code_rows):
        for j in range(3):
            k = levels[r, j]
            if ok(r, j):
                a.append(i)
                b.append(pos[k])
    return keys, np.array(a, np.int64), np.array(b, np.int64)


def _finish(names, code_index, V, src, dst, w, info) -> HICDGraph:
    code_node = np.full(V, -1, np.int64)
    code_node[code_index] = np.arange(len(code_index))
    keep = src != dst
    src, dst, w = src[keep], dst[keep], w[keep]
    ei = np.concatenate([np.stack([src, dst]), np.stack([dst, src])], 1) if len(src) else np.zeros((2, 0), np.int64)
    ww = np.concatenate([w, w]) if len(w) else np.zeros(0)
    deg = np.bincount(ei[0], minlength=len(names)) if ei.size else np.zeros(len(names), np.int64)
    info.update(nodes=len(names), code_nodes=int(len(code_index)), undirected_edges=int(len(src)),
                isolated_code_nodes=int((deg[:len(code_index)] == 0).sum()))
    return HICDGraph(list(names), np.asarray(code_index, np.int64), code_node, ei.astype(np.int64), ww, info)


def build_pmi_graph(codes: list, levels: np.ndarray | None, data: SequenceData, enabled=(1, 1, 1),
                    min_count: int = PMI_MIN_COUNT) -> HICDGraph:
    """HICD-Graph's graph: PMI edges (training split) + ancestor edges at the `enabled` levels."""
    V = len(codes)
    is_node = graph_codes(codes)
    is_node[0] = False
    code_index = np.flatnonzero(is_node)
    local = np.full(V, -1, np.int64)
    local[code_index] = np.arange(len(code_index))
    visits = [local[v] for v in training_visits(data, is_node)]
    ps, pd_, pw, info = pmi_edges(visits, min_count)
    names = [codes[i] for i in code_index]
    src, dst, w = [ps], [pd_], [pw]
    if levels is not None and any(enabled):
        keys, a, b = ancestor_edges(levels, code_index, enabled, codes)
        names += [f"level:{k}" for k in keys]
        src.append(a)
        dst.append(b + len(code_index))
        w.append(np.ones(len(a)))
        info["ancestor_nodes"], info["ancestor_edges"] = len(keys), int(len(a))
    else:
        info["ancestor_nodes"] = info["ancestor_edges"] = 0
    info["levels"] = "".join(str(int(x)) for x in enabled)
    info["source"] = "pmi+ancestors"
    return _finish(names, code_index, V, np.concatenate(src), np.concatenate(dst), np.concatenate(w), info)


def vocabulary_graph(codes: list, vocab_codes, graph, edge_types=KG_EDGE_TYPES, hops: int = 2,
                     expand_types=None) -> HICDGraph:
    """The graph-source variant: the vocabulary's own edges of `edge_types` among the nodes
    within `hops` of the space's diagnosis codes (weight 1); beyond the first hop only edges of
    `expand_types` (default: `edge_types`) extend the neighbourhood. `vocab_codes`: the
    vocabulary's code table (row i = graph node i, column `code_id`); `graph`: its `CodeGraph`."""
    V = len(codes)
    is_node = graph_codes(codes)
    is_node[0] = False
    row_of = {c: i for i, c in enumerate(vocab_codes["code_id"])}
    code_index = np.array([i for i in np.flatnonzero(is_node) if codes[i] in row_of], np.int64)
    names_all = list(vocab_codes["code_id"])
    tid = [graph.edge_type_names.index(t) for t in edge_types if t in graph.edge_type_names]
    m = np.isin(graph.etype, tid)
    s, d = graph.src[m], graph.dst[m]
    far = np.isin(graph.etype[m], [graph.edge_type_names.index(t) for t in (expand_types or edge_types)
                                   if t in graph.edge_type_names])
    keep = {row_of[codes[i]] for i in code_index}
    frontier = set(keep)
    for hop in range(hops):
        hit = (np.isin(s, list(frontier)) | np.isin(d, list(frontier))) & (far if hop > 0 else True)
        new = (set(s[hit].tolist()) | set(d[hit].tolist())) - keep
        keep |= new
        frontier = new
        if not new:
            break
    code_rows = [row_of[codes[i]] for i in code_index]
    others = sorted(keep - set(code_rows))
    node_rows = code_rows + others
    local = {r: i for i, r in enumerate(node_rows)}
    inside = np.array([a in local and b in local for a, b in zip(s.tolist(), d.tolist())], bool) if len(s) else np.zeros(0, bool)
    src = np.array([local[a] for a in s[inside].tolist()], np.int64)
    dst = np.array([local[b] for b in d[inside].tolist()], np.int64)
    names = [codes[i] for i in code_index] + [names_all[r] for r in others]
    info = {"source": "vocabulary KG", "edge_types": [t for t in edge_types if t in graph.edge_type_names],
            "hops": hops, "expand_types": list(expand_types or edge_types), "codes_outside_vocabulary": int(is_node.sum() - len(code_index))}
    return _finish(names, code_index, V, src, dst, np.ones(len(src)), info)
