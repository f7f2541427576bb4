"""Edges removed from the code graph before MedTok training and tokenization.

`TrainConfig.drop_edge_types` names edges by (type, source system, target system), with
None for "any system", in the same shape as the relational QA sets' `RELIED_EDGES`
(`qa.datasets.relational.questions`; medtok does not import qa: the runner passes the specs as plain
data). `TrainConfig.drop_edges_touching` narrows the removal to edges with an endpoint among
given code ids (e.g. only the test codes' edges). The checkpoint records both, and the
tokenizer applies the same edit to its graph, so training, the token table and its cache key
see one graph. The edit is a filter: applying it to an already edited graph changes nothing.

Accepted spellings of one spec: "gem_icd9_icd10" (any systems), "in_group:ICD10CM:CCS",
"is_a:ICD10CM:*", or a sequence (type, src_system|None, dst_system|None) such as an EdgeSpec.
"""

from __future__ import annotations

import numpy as np

from medtok.graph.graph import CodeGraph

ANY = "*"


def normalize_edge_specs(specs) -> list[list] | None:
    """Specs as JSON-friendly [type, src_system or None, dst_system or None] lists (None stays None)."""
    if specs is None:
        return None
    if isinstance(specs, str):
        specs = [specs]
    out = []
    for s in specs:
        if isinstance(s, str):
            parts = s.split(":")
            if len(parts) not in (1, 3):
                raise ValueError(f"edge spec {s!r}: expected TYPE or TYPE:SRC_SYSTEM:DST_SYSTEM")
            parts = parts + [ANY, ANY] if len(parts) == 1 else parts
        else:
            parts = list(s)
            if len(parts) != 3:
                raise ValueError(f"edge spec {s!r}: expected (type, src_system, dst_system)")
        etype, src, dst = (None if p in (None, "", ANY) else str(p) for p in parts)
        if etype is None:
            raise ValueError(f"edge spec {s!r} has no edge type")
        spec = [etype, src, dst]
        if spec not in out:
            out.append(spec)
    return out


def edge_drop_mask(vocab, graph: CodeGraph, specs, touching=None) -> np.ndarray:
    """Boolean mask over `graph`'s stored edges that `specs` name (restricted to edges with an
    endpoint among the code ids `touching`, when given). An edge type the graph does not have
    matches nothing."""
    specs = normalize_edge_specs(specs) or []
    mask = np.zeros(graph.num_edges, dtype=bool)
    if not specs:
        return mask
    system = vocab.codes["system"].to_numpy()
    names = np.array(graph.edge_type_names)[graph.etype]
    for etype, src, dst in specs:
        m = names == etype
        if src is not None:
            m &= system[graph.src] == src
        if dst is not None:
            m &= system[graph.dst] == dst
        mask |= m
    if touching is not None:
        rows = vocab.codes["code_id"].isin(set(touching)).to_numpy()
        mask &= rows[graph.src] | rows[graph.dst]
    return mask


def drop_edges(vocab, graph: CodeGraph, specs, touching=None) -> CodeGraph:
    """`graph` without the edges `edge_drop_mask` selects (the same object when nothing is dropped)."""
    mask = edge_drop_mask(vocab, graph, specs, touching)
    if not mask.any():
        return graph
    keep = ~mask
    return CodeGraph(graph.num_nodes, graph.src[keep], graph.dst[keep], graph.etype[keep], graph.edge_type_names)
