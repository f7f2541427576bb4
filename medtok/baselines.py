"""Training-free token baselines for the intrinsic evaluation (`medtok.intrinsic`).

Each produces a token table shaped like MedTok's -- ids / weights [V, 4, K], group j's ids in
the codebook region of GROUPS[j], K tokens per group, weights softmax(-squared distance /
temperature) on the unit sphere as MedTok's quantizer -- so `medtok.evaluate.evaluate_tokens`
scores it with the same overlap metrics and the same codebook sizes:

* `knn_token_table`: per region, spherical k-means (k-means++ seeding, Lloyd iterations) with
  as many centroids as the region has entries, fitted on the fitting rows' features (not the
  held-out codes'); every code's group tokens are its K nearest centroids. With the frozen
  MiniLM description embedding as every group's feature this is the "text kNN" baseline: what
  the text half alone gives without any training.
* `neighbour_mean_features`: a training-free graph feature (the mean of the neighbours'
  description embeddings, summed over `hops` hops, unit length; a code without edges keeps its
  own embedding). As the graph groups' feature it gives the "text + graph kNN" baseline.
* the untrained MedTok is `tokenizer.with_model(MedTokModel(config))` (see `medtok.intrinsic`).
"""

from __future__ import annotations

import numpy as np
import torch

from medtok.model.config import GROUP_REGION, GROUPS


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _nearest(x: torch.Tensor, c: torch.Tensor, k: int, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """(squared unit-sphere distances [n, k], indices [n, k]) of the k nearest rows of c, ascending."""
    d_out, i_out = [], []
    for s in range(0, len(x), chunk):
        sim, idx = (x[s:s + chunk] @ c.T).topk(k, dim=1)
        d_out.append((2 - 2 * sim).clamp_min(0))
        i_out.append(idx)
    return torch.cat(d_out), torch.cat(i_out)


def kmeans_pp_init(x: np.ndarray, n_clusters: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii 2007) on unit rows: each next centre is a row drawn
    with probability proportional to its squared distance to the nearest centre so far."""
    first = int(rng.integers(len(x)))
    chosen = [first]
    d2 = np.maximum(2 - 2 * (x @ x[first]), 0).astype(np.float64)
    for _ in range(n_clusters - 1):
        total = d2.sum()
        nxt = int(rng.choice(len(x), p=d2 / total)) if total > 0 else int(rng.integers(len(x)))
        chosen.append(nxt)
        d2 = np.minimum(d2, np.maximum(2 - 2 * (x @ x[nxt]), 0))
    return x[chosen].copy()


def spherical_kmeans(x: np.ndarray, n_clusters: int, iters: int = 20, seed: int = 0,
                     sample: int | None = 50000, init_sample: int = 16000) -> np.ndarray:
    """Unit centroids [n_clusters, d] of unit rows `x` (cosine k-means: k-means++ seeding on a
    seeded sample of max(`init_sample`, n_clusters) rows, then Lloyd iterations on a seeded sample
    of `sample` rows when there are more). An emptied cluster is re-seated on a random row."""
    rng = np.random.default_rng(seed)
    x = unit_rows(x)
    if sample is not None and len(x) > sample:
        x = x[np.sort(rng.choice(len(x), sample, replace=False))]
    if len(x) < n_clusters:
        raise ValueError(f"{len(x)} rows cannot make {n_clusters} clusters")
    m = max(init_sample, n_clusters)
    seed_rows = x if len(x) <= m else x[np.sort(rng.choice(len(x), m, replace=False))]
    xt = torch.from_numpy(x)
    c = torch.from_numpy(kmeans_pp_init(seed_rows, n_clusters, rng))
    for _ in range(iters):
        _, a = _nearest(xt, c, 1)
        a = a[:, 0]
        sums = torch.zeros_like(c).index_add_(0, a, xt)
        counts = torch.bincount(a, minlength=n_clusters)
        new = torch.nn.functional.normalize(sums, dim=1)
        empty = torch.nonzero(counts == 0).flatten()
        if len(empty):
            new[empty] = xt[torch.from_numpy(rng.choice(len(x), len(empty), replace=False))]
        if torch.equal(new, c):
            break
        c = new
    return c.numpy()


def nearest_centroids(x: np.ndarray, centroids: np.ndarray, k: int,
                      temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(ids [n, k], weights [n, k]): the k nearest unit centroids of each unit row, weighted
    softmax(-squared distance / temperature) as MedTok's quantizer weights its top-K."""
    d, i = _nearest(torch.from_numpy(unit_rows(x)), torch.from_numpy(unit_rows(centroids)), k)
    return i.numpy().astype(np.int64), torch.softmax(-d / temperature, dim=1).numpy()


def knn_token_table(group_features: dict[str, np.ndarray], regions: dict[str, tuple[int, int]], top_k: int,
                    fit_rows: np.ndarray | None = None, iters: int = 20, sample: int | None = 50000, seed: int = 0,
                    temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A MedTok-shaped token table from per-group features [V, D] (see the module docstring).

    Region r gets (hi - lo) centroids fitted on the `fit_rows` of the distinct feature arrays of
    its groups (the shared region: the text and the graph feature together); each group's ids are
    its K nearest centroids, offset into the region."""
    n = len(next(iter(group_features.values())))
    ids = np.empty((n, len(GROUPS), top_k), dtype=np.int64)
    w = np.empty((n, len(GROUPS), top_k), dtype=np.float32)
    rows = np.arange(n) if fit_rows is None else np.asarray(fit_rows)
    for r, (region, (lo, hi)) in enumerate(regions.items()):
        groups = [g for g in GROUPS if GROUP_REGION[g] == region]
        feats = {id(group_features[g]): group_features[g] for g in groups}  # the same array once
        fit = np.concatenate([unit_rows(f[rows]) for f in feats.values()])
        cent = spherical_kmeans(fit, hi - lo, iters, seed=seed * 1000 + r, sample=sample)
        for g in groups:
            i, ww = nearest_centroids(group_features[g], cent, top_k, temperature)
            ids[:, GROUPS.index(g)] = i + lo
            w[:, GROUPS.index(g)] = ww
    return ids, w


def neighbour_mean_features(x: np.ndarray, graph, hops: int = 2) -> np.ndarray:
    """unit(sum over h = 1..hops of P^h x), P the row-normalised adjacency of `graph` (both directions,
    parallel edges once, no self loops); rows without edges keep their own (unit) x."""
    import scipy.sparse as sp

    n = graph.num_nodes
    heads = np.concatenate([graph.src, graph.dst])
    tails = np.concatenate([graph.dst, graph.src])
    keep = heads != tails
    a = sp.csr_matrix((np.ones(keep.sum(), dtype=np.float32), (heads[keep], tails[keep])), shape=(n, n))
    a.data[:] = 1.0  # parallel edges (e.g. a GEM pair stored in both directions) count once
    deg = np.asarray(a.sum(1)).ravel()
    p = sp.diags(1.0 / np.maximum(deg, 1)).astype(np.float32) @ a
    h = np.asarray(x, dtype=np.float32)
    acc = np.zeros_like(h)
    for _ in range(hops):
        h = p @ h
        acc += h
    out = unit_rows(acc)
    out[deg == 0] = unit_rows(x)[deg == 0]
    return out
