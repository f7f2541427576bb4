"""Typed knowledge graph over the code table, with per-code k-hop subgraph sampling.

Node i is row i of `codes.parquet`. Edges are stored once, directed as built
(child -> parent, ICD-9 -> ICD-10, code -> group, ...) in `graph/edges.parquet`
(`src`, `dst` int64, `type` str); message passing uses both directions.

`NeighborLoader` needs compiled extensions (pyg-lib / torch-sparse) that cannot be
installed here, so sampling is a small CSR breadth-first sampler in numpy: `subgraph_batch`
(a Python loop per centre, the default) or `subgraph_batch_vectorized` (the whole batch in array
operations over the CSR arrays; the same neighbourhoods when neighbours are not subsampled, the
same distribution when they are: `TrainConfig.sampler`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medbase.atomic import atomic_path, atomic_write_text


class SubgraphBatch:
    """The batched k-hop subgraphs `make_batch` reads: `n_id` [n] (global ids, graph by graph,
    centre first), `edge_index` [2, E] (batch rows), `edge_type` [E], `ptr` [B + 1], `batch` [n],
    `center_index` [B] (row of each centre), as torch_geometric's `Batch` of `subgraph`s."""

    def __init__(self, n_id, edge_index, edge_type, ptr):
        self.n_id, self.edge_index, self.edge_type, self.ptr = n_id, edge_index, edge_type, ptr
        counts = ptr[1:] - ptr[:-1]
        self.batch = torch.repeat_interleave(torch.arange(len(counts), device="cpu"), counts)
        self.center_index = ptr[:-1].clone()
        self.num_nodes = int(ptr[-1])

EDGE_TYPES = [
    "is_a",            # child -> parent, every hierarchy
    "gem_icd9_icd10",  # ICD-9-CM -> ICD-10-CM (GEM forward)
    "gem_icd10_icd9",  # ICD-10-CM -> ICD-9-CM (GEM backward)
    "gem_icd9pcs_icd10pcs",  # ICD-9 procedure -> ICD-10-PCS
    "in_group",        # code -> grouping node (CCS, CCSR, phecode)
    "xref",            # code <-> external concept (MONDO, UMLS, DrugBank)
    "kg_relation",     # relation from an external knowledge graph (PrimeKG, Hetionet)
]


class CodeGraph:
    def __init__(self, num_nodes: int, src: np.ndarray, dst: np.ndarray, etype: np.ndarray,
                 edge_type_names: list[str] | None = None):
        self.num_nodes = int(num_nodes)
        self.edge_type_names = list(edge_type_names or EDGE_TYPES)
        self.src = np.asarray(src, dtype=np.int64)
        self.dst = np.asarray(dst, dtype=np.int64)
        self.etype = np.asarray(etype, dtype=np.int64)
        if len(self.src) and (self.src.max() >= num_nodes or self.dst.max() >= num_nodes or min(self.src.min(), self.dst.min()) < 0):
            raise ValueError("edge endpoint outside [0, num_nodes)")
        self._build_csr()

    # ---- construction / persistence -----------------------------------
    @classmethod
    def from_frame(cls, num_nodes: int, edges: pd.DataFrame) -> "CodeGraph":
        names = list(EDGE_TYPES) + sorted(set(edges["type"]) - set(EDGE_TYPES))
        lookup = {n: i for i, n in enumerate(names)}
        return cls(num_nodes, edges["src"].to_numpy(), edges["dst"].to_numpy(),
                   edges["type"].map(lookup).to_numpy(), names)

    def to_frame(self) -> pd.DataFrame:
        names = np.array(self.edge_type_names)
        return pd.DataFrame({"src": self.src, "dst": self.dst, "type": names[self.etype]})

    def save(self, directory: str | Path) -> None:
        """graph/edges.parquet and graph/meta.json, each written atomically."""
        d = Path(directory) / "graph"
        d.mkdir(parents=True, exist_ok=True)
        with atomic_path(d / "edges.parquet") as tmp:
            self.to_frame().to_parquet(tmp, index=False)
        atomic_write_text(d / "meta.json", json.dumps({"num_nodes": self.num_nodes, "edge_types": self.edge_type_names}, indent=1))

    @classmethod
    def load(cls, directory: str | Path) -> "CodeGraph":
        d = Path(directory) / "graph"
        meta = json.loads((d / "meta.json").read_text())
        edges = pd.read_parquet(d / "edges.parquet")
        lookup = {n: i for i, n in enumerate(meta["edge_types"])}
        return cls(meta["num_nodes"], edges["src"].to_numpy(), edges["dst"].to_numpy(),
                   edges["type"].map(lookup).to_numpy(), meta["edge_types"])

    # ---- structure ------------------------------------------------------
    def _build_csr(self) -> None:
        # undirected adjacency: each stored edge is walkable both ways
        heads = np.concatenate([self.src, self.dst])
        tails = np.concatenate([self.dst, self.src])
        eids = np.concatenate([np.arange(len(self.src)), np.arange(len(self.src))])
        order = np.argsort(heads, kind="stable")
        self._nbr = tails[order]
        self._nbr_eid = eids[order]
        self._indptr = np.zeros(self.num_nodes + 1, dtype=np.int64)
        np.cumsum(np.bincount(heads, minlength=self.num_nodes), out=self._indptr[1:])

    @property
    def num_edges(self) -> int:
        return len(self.src)

    def degree(self) -> np.ndarray:
        return np.diff(self._indptr)

    def neighbors(self, node: int) -> np.ndarray:
        return self._nbr[self._indptr[node]:self._indptr[node + 1]]

    def edge_index(self) -> torch.Tensor:
        return torch.from_numpy(np.stack([self.src, self.dst]))

    def edge_counts(self) -> dict[str, int]:
        counts = np.bincount(self.etype, minlength=len(self.edge_type_names))
        return {n: int(c) for n, c in zip(self.edge_type_names, counts) if c}

    # ---- sampling -------------------------------------------------------
    def k_hop_nodes(self, center: int, num_hops: int = 2, max_neighbors: int = 16,
                    rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Nodes within `num_hops` of `center` (center first) and the ids of the edges walked.

        Each expanded node contributes at most `max_neighbors` neighbours (random when `rng`
        is given, otherwise the first ones in CSR order, which is deterministic).
        """
        seen = {center: 0}
        order = [center]
        edges: list[int] = []
        frontier = [center]
        for _ in range(num_hops):
            nxt = []
            for u in frontier:
                lo, hi = self._indptr[u], self._indptr[u + 1]
                idx = np.arange(lo, hi)
                if hi - lo > max_neighbors:
                    idx = rng.choice(idx, max_neighbors, replace=False) if rng is not None else idx[:max_neighbors]
                for j in idx:
                    v = int(self._nbr[j])
                    edges.append(int(self._nbr_eid[j]))
                    if v not in seen:
                        seen[v] = len(order)
                        order.append(v)
                        nxt.append(v)
            frontier = nxt
        return np.array(order, dtype=np.int64), np.unique(np.array(edges, dtype=np.int64))

    def subgraph(self, center: int, num_hops: int = 2, max_neighbors: int = 16,
                 rng: np.random.Generator | None = None):
        """torch_geometric `Data` for one code: `n_id` (global ids, center at 0), local
        `edge_index` [2, E] (both directions), `edge_type` [E], `center` = 0."""
        from torch_geometric.data import Data

        nodes, eids = self.k_hop_nodes(center, num_hops, max_neighbors, rng)
        local = {int(n): i for i, n in enumerate(nodes)}
        s = np.array([local.get(int(x), -1) for x in self.src[eids]], dtype=np.int64)
        d = np.array([local.get(int(x), -1) for x in self.dst[eids]], dtype=np.int64)
        keep = (s >= 0) & (d >= 0)  # edges walked at the last hop may leave the node set
        s, d, t = s[keep], d[keep], self.etype[eids][keep]
        ei = torch.from_numpy(np.stack([np.concatenate([s, d]), np.concatenate([d, s])]))
        et = torch.from_numpy(np.concatenate([t, t]))
        return Data(n_id=torch.from_numpy(nodes), edge_index=ei, edge_type=et,
                    center=torch.tensor([0], device="cpu"), num_nodes=len(nodes))

    def subgraph_batch(self, centers, num_hops: int = 2, max_neighbors: int = 16,
                       rng: np.random.Generator | None = None):
        """A torch_geometric `Batch` of per-code subgraphs; `batch.center_index` gives, for each
        center, the row of its node in the batched node set."""
        from torch_geometric.data import Batch

        graphs = [self.subgraph(int(c), num_hops, max_neighbors, rng) for c in centers]
        batch = Batch.from_data_list(graphs)
        batch.center_index = batch.ptr[:-1].clone()
        return batch

    def subgraph_batch_vectorized(self, centers, num_hops: int = 2, max_neighbors: int = 16,
                                  rng: np.random.Generator | None = None) -> SubgraphBatch:
        """`subgraph_batch` in array operations over the CSR arrays (no per-centre Python loop).

        Without `rng` (first `max_neighbors` neighbours in CSR order) it returns exactly the nodes,
        node order, edges and edge order of `subgraph_batch`. With `rng`, a node with more than
        `max_neighbors` neighbours keeps a uniformly random subset of them in random order, as
        `rng.choice(..., replace=False)` does in `subgraph_batch`, but from other random draws:
        the same distribution, other samples."""
        centers = np.asarray(centers, dtype=np.int64)
        B, N, cap = len(centers), self.num_nodes, int(max_neighbors)
        ip, nbr, nbr_eid = self._indptr, self._nbr, self._nbr_eid
        node_g, node_v, node_o = np.arange(B), centers.copy(), np.zeros(B, dtype=np.int64)
        counts = np.ones(B, dtype=np.int64)
        fr_g, fr_v = np.arange(B), centers.copy()  # frontier, sorted by (graph, discovery order)
        walk_g, walk_e = [], []
        for _ in range(num_hops):
            if len(fr_v) == 0:
                break
            lo, deg = ip[fr_v], ip[fr_v + 1] - ip[fr_v]
            seg_ids = np.arange(len(fr_v))
            det = deg <= cap if rng is not None else np.ones(len(fr_v), dtype=bool)
            # deterministic segments: the first min(deg, cap) entries in CSR order
            take = np.where(det, np.minimum(deg, cap), 0)
            seg_d = np.repeat(seg_ids, take)
            rank_d = np.arange(len(seg_d)) - np.repeat(np.cumsum(take) - take, take)
            pos_d = lo[seg_d] + rank_d
            # subsampled segments: random keys over all their entries, the cap smallest per segment
            deg_r = np.where(det, 0, deg)
            seg_r = np.repeat(seg_ids, deg_r)
            if len(seg_r):
                pos_all = lo[seg_r] + np.arange(len(seg_r)) - np.repeat(np.cumsum(deg_r) - deg_r, deg_r)
                order = np.lexsort((rng.random(len(seg_r)), seg_r))
                seg_r, pos_all = seg_r[order], pos_all[order]
                start = np.searchsorted(seg_r, seg_r, side="left")
                rank_r = np.arange(len(seg_r)) - start
                keep = rank_r < cap
                seg_r, rank_r, pos_r = seg_r[keep], rank_r[keep], pos_all[keep]
            else:
                rank_r = pos_r = np.zeros(0, dtype=np.int64)
            seg = np.concatenate([seg_d, seg_r])
            rank = np.concatenate([rank_d, rank_r])
            pos = np.concatenate([pos_d, pos_r])
            o = np.lexsort((rank, seg))
            seg, pos = seg[o], pos[o]
            g, v = fr_g[seg], nbr[pos]
            walk_g.append(g)
            walk_e.append(nbr_eid[pos])
            # new nodes: first occurrence per graph, not yet in it, in walk order
            key = g * N + v
            known = np.sort(node_g * N + node_v)
            at = np.searchsorted(known, key).clip(max=max(len(known) - 1, 0))
            is_new = known[at] != key if len(known) else np.ones(len(key), dtype=bool)
            _, first = np.unique(key, return_index=True)
            first = np.sort(first[is_new[first]])
            ng, nv = g[first], v[first]
            grp_start = np.searchsorted(ng, ng, side="left")
            no = counts[ng] + np.arange(len(ng)) - grp_start
            counts += np.bincount(ng, minlength=B)
            node_g, node_v, node_o = (np.concatenate([node_g, ng]), np.concatenate([node_v, nv]),
                                      np.concatenate([node_o, no]))
            fr_g, fr_v = ng, nv
        o = np.lexsort((node_o, node_g))
        node_g, node_v = node_g[o], node_v[o]
        ptr = np.zeros(B + 1, dtype=np.int64)
        np.cumsum(counts, out=ptr[1:])
        # walked edges, unique per graph in id order; both endpoints must be in the graph's node set
        wg = np.concatenate(walk_g) if walk_g else np.zeros(0, dtype=np.int64)
        we = np.concatenate(walk_e) if walk_e else np.zeros(0, dtype=np.int64)
        E = max(self.num_edges, 1)
        ge = np.unique(wg * E + we)
        eg, eid = ge // E, ge % E
        node_key = node_g * N + node_v            # sorted by (graph, order); rows = batch positions
        srt = np.argsort(node_key, kind="stable")
        sk = node_key[srt]

        def local(gr, x):
            k = gr * N + x
            at = np.searchsorted(sk, k).clip(max=max(len(sk) - 1, 0))
            hit = sk[at] == k if len(sk) else np.zeros(len(k), dtype=bool)
            return np.where(hit, srt[at], -1)

        s, d = local(eg, self.src[eid]), local(eg, self.dst[eid])
        keep = (s >= 0) & (d >= 0)
        s, d, t, eg = s[keep], d[keep], self.etype[eid][keep], eg[keep]
        # per graph: [s -> d for its edges, then d -> s], graphs in order (as Batch.from_data_list)
        direction = np.concatenate([np.zeros(len(s), dtype=np.int64), np.ones(len(s), dtype=np.int64)])
        seq = np.concatenate([np.arange(len(s)), np.arange(len(s))])
        gg = np.concatenate([eg, eg])
        o = np.lexsort((seq, direction, gg))
        rows = np.concatenate([s, d])[o]
        cols = np.concatenate([d, s])[o]
        et = np.concatenate([t, t])[o]
        return SubgraphBatch(torch.from_numpy(node_v), torch.from_numpy(np.stack([rows, cols])),
                             torch.from_numpy(et), torch.from_numpy(ptr))
