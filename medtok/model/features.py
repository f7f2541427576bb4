"""Node features and neighbourhood tables shared by training and inference.

Node features live on the CPU (they are data: the frozen text embeddings of the whole
vocabulary); training moves each batch's rows to the model's device, tokenization moves the
whole table once.
"""

from __future__ import annotations

import numpy as np
import torch

from medtok.model.config import MedTokConfig
from medtok.model.text_encoder import cached_text_embeddings


def node_features(vocab, graph, config: MedTokConfig, text_embeddings: np.ndarray | None = None,
                  progress: bool = True, device: str = "cpu") -> torch.Tensor:
    """[V, text_dim] float32 CPU node features: cached frozen-encoder embeddings of the descriptions
    (imputed from neighbours where a description is empty), or random ids for the graph-only ablation.
    `device`: where the text encoder runs for texts the cache does not hold yet (the features
    themselves are returned on the CPU)."""
    if config.modalities == "graph":
        return random_node_features(len(vocab), config.text_dim)
    if text_embeddings is None:
        texts = [str(t or "") for t in vocab.codes["description"]]
        text_embeddings = cached_text_embeddings(texts, config.text_encoder, progress=progress, device=device)
    if text_embeddings.shape != (len(vocab), config.text_dim):
        raise ValueError(f"text embeddings {text_embeddings.shape} != ({len(vocab)}, text_dim={config.text_dim})")
    has_text = vocab.codes["description"].fillna("").str.strip().to_numpy() != ""
    if not has_text.all():
        text_embeddings = impute_missing_text(text_embeddings, has_text, graph.src, graph.dst)
    return torch.from_numpy(np.ascontiguousarray(text_embeddings, dtype=np.float32))


def neighbor_table(src: np.ndarray, dst: np.ndarray, num_nodes: int, cap: int, rows: np.ndarray | None = None,
                   seed: int = 0) -> np.ndarray:
    """[len(rows), 1 + cap] int64: each row's own id, then up to `cap` distinct neighbours (-1 pads).

    `src`/`dst` are directed edges (pass both directions for an undirected graph). When a
    node has more than `cap` neighbours a fixed pseudo-random subset (by `seed`) is kept.
    """
    rows = np.arange(num_nodes) if rows is None else np.asarray(rows, dtype=np.int64)
    pos = np.full(num_nodes, -1, dtype=np.int64)
    pos[rows] = np.arange(len(rows))
    keep = (pos[src] >= 0) & (src != dst)
    s, d = src[keep], dst[keep]
    pair = np.unique(s.astype(np.int64) * num_nodes + d)  # dedupe parallel edges
    s, d = pair // num_nodes, pair % num_nodes
    shuffle = np.random.default_rng(seed).permutation(len(s))
    s, d = s[shuffle], d[shuffle]
    order = np.argsort(pos[s], kind="stable")
    s, d = s[order], d[order]
    r = pos[s]
    starts = np.searchsorted(r, np.arange(len(rows)))
    rank = np.arange(len(r)) - starts[r]
    ok = rank < cap
    table = np.full((len(rows), 1 + cap), -1, dtype=np.int64)
    table[:, 0] = rows
    table[r[ok], 1 + rank[ok]] = d[ok]
    return table


def random_node_features(num_nodes: int, dim: int, seed: int = 0) -> torch.Tensor:
    """Unit-norm random node ids: the input of the graph-only ablation (no text anywhere)."""
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(num_nodes, dim, generator=g, device="cpu"), dim=-1)


def impute_missing_text(emb: np.ndarray, has_text: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Codes without a description take the mean text embedding of their graph neighbours
    (one hop, then two), so their graph context still yields tokens. Rows with neither stay 0."""
    emb = emb.copy()
    emb[~has_text] = 0
    known = has_text.copy()
    s = np.concatenate([src, dst])
    d = np.concatenate([dst, src])
    for _ in range(2):
        if known.all():
            break
        m = known[s] & ~known[d]
        if not m.any():
            break
        acc = np.zeros_like(emb)
        np.add.at(acc, d[m], emb[s[m]])
        cnt = np.bincount(d[m], minlength=len(emb))
        newly = cnt > 0
        emb[newly] = acc[newly] / cnt[newly, None]
        emb[newly] /= np.maximum(np.linalg.norm(emb[newly], axis=1, keepdims=True), 1e-12)
        known = known | newly
    return emb
