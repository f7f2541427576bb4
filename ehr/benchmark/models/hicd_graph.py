"""HICD-Graph (issue 22; Thukral et al. 2026): a 2-layer GCN pretrained by link prediction on the
code graph (`ehr.benchmark.cooccurrence`), whose code embeddings initialise a patient model
with mean pooling per visit and attention pooling across visits.

- `GCNEncoder`: a learned input row per node -> GCNConv -> ReLU -> GCNConv (torch_geometric;
  symmetric normalisation with self loops, edge weights = PMI or 1). Full-batch.
- `pretrain_link_prediction`: each epoch, the BCE of dot-product scores of every positive
  (undirected) edge against as many negatives drawn uniformly (`negative_sampling`), AdamW
  (lr 0.01, weight decay 0), `GCNConfig.epochs` = 100 epochs, seeded. No validation: the encoder is
  only an initialiser; `link_auc` measures it on held-out edges in the tests.
- `cached_embeddings`: one artefact per (graph content, GCN config, seed) under a cache
  directory (`<grid out>/pretrain/<dataset>/<task key>/gcn__<key>.npz` + `.json`), written
  atomically and reused: an interrupted grid resumes without redoing finished pretraining.
  The graph's content hash covers the scenario (its training split) and the levels.
- `GraphInitTokenizer` (tokenizer specs `graph-XYZ`, `graph-kg`, `graph-kgjoin`): a trainable
  per-code table whose rows start from the GCN embeddings (scaled to the flat table's init
  standard deviation 0.02), then train like flat; a graph code never seen in training gets
  its GCN embedding as a frozen vector (inductive through its ancestor edges); non-graph
  codes (procedures, markers) use the flat table.
- `VisitPatientModel` (model name `hicd`): code vectors -> mean over each visit's codes (+ a
  learned visit-position row) -> Transformer encoder over visits (the same ModelConfig sizes as
  the other neural models) -> attention pooling across visits -> head. With the `flat`
  tokenizer it is the flat-codes baseline in the same patient model.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ehr.benchmark.cooccurrence import HICDGraph
from ehr.benchmark.models.encoder import ModelConfig
from ehr.benchmark.tokenizers import CodeTokenizer, _lookup_rows
from medbase.atomic import atomic_path, atomic_write_text
from medbase.jsonconfig import JsonConfig


@dataclass
class GCNConfig(JsonConfig):
    hidden: int = 64
    epochs: int = 100
    lr: float = 0.01
    negatives_per_edge: int = 1
    pmi_min_count: int = 2


class GCNEncoder(nn.Module):
    def __init__(self, n_nodes: int, d: int, hidden: int = 64):
        super().__init__()
        from torch_geometric.nn import GCNConv

        self.x = nn.Embedding(max(n_nodes, 1), hidden)
        nn.init.normal_(self.x.weight, std=0.1)
        self.conv1, self.conv2 = GCNConv(hidden, hidden), GCNConv(hidden, d)

    def forward(self, edge_index: torch.Tensor, edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        h = torch.relu(self.conv1(self.x.weight, edge_index, edge_weight))
        return self.conv2(h, edge_index, edge_weight)


def _undirected_pairs(edge_index: np.ndarray) -> np.ndarray:
    e = edge_index[:, edge_index[0] < edge_index[1]]
    return e


def pretrain_link_prediction(graph: HICDGraph, d: int, seed: int, cfg: GCNConfig | None = None,
                             edge_index: np.ndarray | None = None, edge_weight: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """(node embeddings [N, d] float32, history). `edge_index` / `edge_weight`: train on these
    edges instead of the graph's (held-out evaluation)."""
    from torch_geometric.utils import negative_sampling

    cfg = cfg or GCNConfig()
    ei = graph.edge_index if edge_index is None else edge_index
    ew = graph.edge_weight if edge_weight is None else edge_weight
    g = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))
    enc = GCNEncoder(graph.num_nodes, d, cfg.hidden)
    E = torch.from_numpy(np.ascontiguousarray(ei, dtype=np.int64))
    W = torch.from_numpy(np.asarray(ew, dtype=np.float32))
    pos = torch.from_numpy(np.ascontiguousarray(_undirected_pairs(ei)))
    hist = {"edges": int(pos.shape[1]), "nodes": graph.num_nodes, "loss": []}
    if pos.shape[1] == 0 or graph.num_nodes < 2:
        with torch.no_grad():
            z = enc(E, W)
        hist["note"] = "no edges: untrained encoder output"
        return z.numpy().astype(np.float32), hist
    opt = torch.optim.AdamW(enc.parameters(), lr=cfg.lr, weight_decay=0.0)
    for _ in range(cfg.epochs):
        enc.train()
        z = enc(E, W)
        torch.manual_seed(int(torch.randint(0, 2 ** 31 - 1, (1,), generator=g)))
        neg = negative_sampling(E, num_nodes=graph.num_nodes, num_neg_samples=pos.shape[1] * cfg.negatives_per_edge)
        sp = (z[pos[0]] * z[pos[1]]).sum(-1)
        sn = (z[neg[0]] * z[neg[1]]).sum(-1)
        loss = nn.functional.binary_cross_entropy_with_logits(torch.cat([sp, sn]),
                                                              torch.cat([torch.ones_like(sp), torch.zeros_like(sn)]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        hist["loss"].append(float(loss.detach()))
    enc.eval()
    with torch.no_grad():
        z = enc(E, W)
    return z.numpy().astype(np.float32), hist


def link_auc(z: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> float:
    """AUROC of dot-product scores: positive pairs [2, P] vs negative pairs [2, Q]."""
    from sklearn.metrics import roc_auc_score

    sp = (z[pos[0]] * z[pos[1]]).sum(-1)
    sn = (z[neg[0]] * z[neg[1]]).sum(-1)
    return float(roc_auc_score(np.r_[np.ones(len(sp)), np.zeros(len(sn))], np.r_[sp, sn]))


def pretrain_key(graph: HICDGraph, d: int, seed: int, cfg: GCNConfig) -> str:
    part = json.dumps({"graph": graph.fingerprint(), "d": d, "seed": seed, "cfg": cfg.to_dict()}, sort_keys=True)
    return hashlib.blake2b(part.encode(), digest_size=6).hexdigest()


def cached_embeddings(graph: HICDGraph, d: int, seed: int, cfg: GCNConfig, cache_dir: str | Path | None,
                      label: str = "gcn") -> tuple[np.ndarray, dict]:
    """The pretrained node embeddings, from `cache_dir` when this (graph, d, seed, cfg) is done."""
    key = pretrain_key(graph, d, seed, cfg)
    if cache_dir is not None:
        path = Path(cache_dir) / f"{label}__s{seed}__{key}.npz"
        meta_path = path.with_suffix(".json")
        if path.exists() and meta_path.exists():
            with np.load(path) as f:
                z = f["z"]
            return z, {**json.loads(meta_path.read_text()), "cached": True}
    t0 = time.perf_counter()
    z, hist = pretrain_link_prediction(graph, d, seed, cfg)
    meta = {"key": key, "graph": graph.info, "graph_fingerprint": graph.fingerprint(), "seed": seed,
            "gcn_config": cfg.to_dict(), "pretrain_seconds": time.perf_counter() - t0,
            "final_loss": hist["loss"][-1] if hist["loss"] else None, "edges": hist["edges"], "cached": False}
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, z=z)
        atomic_write_text(meta_path, json.dumps(meta, indent=1, default=str) + "\n")
    return z, meta


class GraphInitTokenizer(CodeTokenizer):
    """Per-code rows initialised from the GCN's code-node embeddings (see the module doc)."""

    def __init__(self, spec, d, space, train_seen, res, graph: HICDGraph, z: np.ndarray, pretrain_info: dict | None = None):
        V = len(space)
        has = graph.code_node >= 0
        has[0] = False
        super().__init__(spec, d, space, train_seen, res, own=has)
        self.unseen_rule = ("graph code never seen in training: its GCN embedding (frozen; inductive through its "
                            "ancestor / KG edges); other codes: UNK row")
        seen_g = has & train_seen.astype(bool)
        emb = np.zeros((V, d), np.float32)
        emb[has] = z[graph.code_node[has]]
        sd = float(emb[seen_g].std()) if seen_g.any() else float(emb[has].std()) if has.any() else 0.0
        scale = 0.02 / sd if sd > 0 else 1.0
        emb *= scale
        rows, n = _lookup_rows(range(V), set(np.flatnonzero(seen_g).tolist()))
        table = np.zeros((n, d), np.float32)
        table[rows[seen_g]] = emb[seen_g]
        self.table = nn.Embedding(n, d)
        with torch.no_grad():
            self.table.weight.copy_(torch.from_numpy(table))
        self.register_buffer("frozen_graph", torch.from_numpy(emb), persistent=False)
        self.register_buffer("init_row", torch.from_numpy(rows), persistent=False)
        self.register_buffer("seen_g", torch.from_numpy(seen_g), persistent=False)
        self.register_buffer("has_g", torch.from_numpy(has), persistent=False)
        self.graph_info = {"graph": graph.info, "gcn_scale": scale, **(pretrain_info or {})}
        self.counts.update(graph_rows=n - 1, graph_codes=int(has.sum()),
                           unseen_graph_codes=int((has & ~train_seen.astype(bool)).sum()))

    def code_vectors(self, codes):
        v = torch.where(self.seen_g[codes].unsqueeze(-1), self.table(self.init_row[codes]), self.frozen_graph[codes])
        return torch.where(self.has_g[codes].unsqueeze(-1), v, self.flat(self.flat_row[codes]))

    def describe(self):
        return {**super().describe(), "pretraining": self.graph_info}


class VisitPatientModel(nn.Module):
    """HICD-Graph's patient model: mean pooling per visit, Transformer over visits, attention
    pooling across visits."""

    def __init__(self, tokenizer: nn.Module, n_out: int, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.cfg, self.tokenizer = cfg, tokenizer
        self.visit_position = nn.Embedding(cfg.max_visits, d)
        nn.init.normal_(self.visit_position.weight, std=0.02)
        layer = nn.TransformerEncoderLayer(d, cfg.heads, cfg.ff, cfg.dropout, batch_first=True, norm_first=True)
        layer.self_attn.dropout = 0.0
        layer.dropout.p = 0.0
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.attn = nn.Linear(d, 1)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, n_out)
        self.drop = nn.Dropout(cfg.dropout)

    def visit_vectors(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """([B, Vmax, d] mean code vector per visit, [B, Vmax] visit present)."""
        x, tmask = self.tokenizer(batch["codes"])                 # [B, L, T, d], [B, L, T]
        m = tmask.float()
        tok = (x * m.unsqueeze(-1)).sum(2)                         # codes' slots summed (T = 1 but hier-tok)
        valid = tmask.any(-1)                                      # [B, L]
        vp = batch["visit_pos"].clamp(min=0)
        B, L, d = tok.shape
        nv = int(vp[valid].max()) + 1 if valid.any() else 1
        idx = torch.where(valid, vp, torch.zeros_like(vp))
        s = torch.zeros(B, nv, d, dtype=tok.dtype).scatter_add_(1, idx.unsqueeze(-1).expand(B, L, d),
                                                                tok * valid.unsqueeze(-1))
        c = torch.zeros(B, nv, dtype=tok.dtype).scatter_add_(1, idx, valid.to(tok.dtype))
        present = c > 0
        v = s / c.clamp(min=1).unsqueeze(-1)
        return v, present

    def encode(self, batch: dict) -> torch.Tensor:
        v, present = self.visit_vectors(batch)
        nv = v.shape[1]
        pos = torch.arange(nv, device=v.device).clamp(max=self.cfg.max_visits - 1)
        h = self.drop(v + self.visit_position(pos).unsqueeze(0))
        empty = ~present.any(1)
        keep = present.clone()
        keep[empty, 0] = True                                     # a sample without codes: one (zero) visit
        h = self.encoder(h, src_key_padding_mask=~keep)
        a = self.attn(h).squeeze(-1).masked_fill(~keep, float("-inf"))
        w = torch.softmax(a, -1)
        return self.norm((w.unsqueeze(-1) * h).sum(1))

    def forward(self, batch: dict) -> torch.Tensor:
        return self.head(self.encode(batch))
