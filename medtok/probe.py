"""Description-retrieval probe: how much of a code's text meaning its MedTok vectors keep.

A ridge map is fitted from MedTok vectors (the 4 quantized group vectors of a code,
concatenated: 4 x d) to the frozen MiniLM embedding of the code's description, on training
codes. For held-out codes (never a MedTok training centre) the mapped vector then has to pick
the code's own description among `n_candidates` candidate codes (cosine; the held-out codes
are shuffled and cut into pools of `n_candidates`, every code of a pool is a query).
accuracy@1 = 1 / n_candidates is chance; 1.0 means the vectors determine the description.

    python scripts/probe_medtok.py data/cache/medtok_icd10cm --n 1000
    from medtok.probe import ProbeConfig, probe_checkpoint
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medbase.jsonconfig import JsonConfig
from medtok.model.medtok import MedTokModel
from medtok.tokenizer import MedTokTokenizer


@dataclass
class ProbeConfig(JsonConfig):
    n_candidates: int = 1000        # codes each held-out code is retrieved among
    alpha: float = 1.0              # ridge penalty on standardised vector features
    max_train: int = 20000          # training codes for the ridge (a seeded sample; 0 = all)
    systems: tuple[str, ...] | None = ("ICD10CM",)  # codes probed; None = every system the checkpoint has
    seed: int = 0
    ks: tuple[int, ...] = (1, 5, 10)

    def __post_init__(self):
        self.systems = tuple(self.systems) if self.systems else None
        self.ks = tuple(int(k) for k in self.ks)
        if self.n_candidates < 2 or self.alpha < 0 or self.max_train < 0 or not self.ks or min(self.ks) < 1:
            raise ValueError("n_candidates >= 2, alpha >= 0, max_train >= 0 and ks >= 1 required")


@dataclass
class RidgeMap:
    """y = ((x - x_mean) / x_std) @ W + y_mean."""

    x_mean: np.ndarray
    x_std: np.ndarray
    w: np.ndarray
    y_mean: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, np.float64) - self.x_mean) / self.x_std) @ self.w + self.y_mean


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float = 1.0) -> RidgeMap:
    """Closed-form ridge regression (features standardised so `alpha` does not depend on their scale)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    xm, xs, ym = x.mean(0), x.std(0), y.mean(0)
    xs = np.where(xs > 1e-12, xs, 1.0)  # constant columns carry nothing; keep them at 0
    z = (x - xm) / xs
    w = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (y - ym))
    return RidgeMap(xm, xs, w, ym)


def retrieval_accuracy(pred: np.ndarray, target: np.ndarray, n_candidates: int, ks=(1, 5, 10),
                       rng: np.random.Generator | None = None) -> dict:
    """accuracy@k of finding row i's `target` from `pred[i]` by cosine among the pool it falls in.

    Rows are shuffled (by `rng`) and cut into pools of `n_candidates`; the remainder is dropped
    unless there are fewer rows than that (then one pool of all rows). Ties count against the
    query (rank = number of candidates scoring at least as high, the target excluded)."""
    n = len(pred)
    if n < 2:
        raise ValueError(f"need at least 2 held-out rows, got {n}")
    order = (rng or np.random.default_rng(0)).permutation(n)
    size = min(n_candidates, n)
    pools = [order[i:i + size] for i in range(0, n - size + 1, size)]
    unit = lambda a: a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)  # noqa: E731
    p, t = unit(np.asarray(pred, np.float64)), unit(np.asarray(target, np.float64))
    ranks = []
    for pool in pools:
        s = p[pool] @ t[pool].T
        own = np.diag(s)
        ranks.append((s >= own[:, None]).sum(1) - 1)
    r = np.concatenate(ranks)
    out = {f"acc@{k}": float((r < k).mean()) for k in ks}
    out.update(n_queries=int(len(r)), n_candidates=int(size), pools=len(pools), chance_at_1=1.0 / size,
               mean_rank=float(r.mean()) + 1)
    return out


def description_retrieval(vectors: np.ndarray, text_emb: np.ndarray, train_rows, test_rows,
                          config: ProbeConfig | None = None) -> dict:
    """Fit the ridge on `train_rows`, retrieve `test_rows`' descriptions (rows index both arrays)."""
    cfg = config or ProbeConfig()
    rng = np.random.default_rng(cfg.seed)
    train_rows, test_rows = np.asarray(train_rows), np.asarray(test_rows)
    if cfg.max_train and len(train_rows) > cfg.max_train:
        train_rows = np.sort(rng.choice(train_rows, cfg.max_train, replace=False))
    x = np.asarray(vectors).reshape(len(vectors), -1)
    ridge = fit_ridge(x[train_rows], text_emb[train_rows], cfg.alpha)
    res = retrieval_accuracy(ridge(x[test_rows]), text_emb[test_rows], cfg.n_candidates, cfg.ks, rng)
    # the same on a random pool of training codes: how well the map fits where it was fitted
    fit_rows = rng.choice(train_rows, min(len(train_rows), cfg.n_candidates), replace=False)
    res["train_acc@1"] = retrieval_accuracy(ridge(x[fit_rows]), text_emb[fit_rows], cfg.n_candidates, (1,), rng)["acc@1"]
    res.update(train_codes=int(len(train_rows)), test_codes=int(len(test_rows)), feature_dim=int(x.shape[1]))
    return res


def probe_tokenizer(tok, config: ProbeConfig | None = None, text_embeddings: np.ndarray | None = None,
                    heldout_codes=None) -> dict:
    """The probe for a `MedTokTokenizer`: held-out rows are its training run's held-out codes
    (`tok.heldout_mask()`: its `heldout_fraction` plus its explicit `heldout_codes`), or `heldout_codes` when given
    (e.g. a strictly-unseen MedTok's excluded codes). Targets are `text_embeddings` [V, dim] when
    given, else the tokenizer's own frozen text features (a graph-only MedTok has none: pass them)."""
    import torch

    cfg = config or ProbeConfig()
    codes = tok.vocab.codes
    ok = (codes["kind"].to_numpy() == "code") & (codes["description"].fillna("").str.strip().to_numpy() != "")
    if cfg.systems:
        ok &= codes["system"].isin(list(cfg.systems)).to_numpy()
    if heldout_codes is not None:
        held = codes["code_id"].isin(set(heldout_codes)).to_numpy()
    else:
        held = tok.heldout_mask()
    rows = np.flatnonzero(ok)
    if text_embeddings is None:
        if tok.model.config.modalities == "graph":
            raise ValueError("a graph-only MedTok has no text features: pass text_embeddings")
        text_embeddings = tok.x.numpy() if isinstance(tok.x, torch.Tensor) else np.asarray(tok.x)
    vec = tok.encode_rows(rows).vectors.float().cpu().numpy()
    target = np.asarray(text_embeddings, np.float64)[rows]
    res = description_retrieval(vec, target, np.flatnonzero(~held[rows]), np.flatnonzero(held[rows]), cfg)
    res["config"] = cfg.to_dict()
    return res


def probe_checkpoint(ckpt: str | Path, config: ProbeConfig | None = None, heldout_codes=None, vocab=None,
                     graph=None, text_embeddings: np.ndarray | None = None, progress: bool = True,
                     untrained: bool = False) -> dict:
    """Load a MedTok checkpoint and run `probe_tokenizer` on it. `untrained`: probe instead a
    randomly initialised MedTok of the same configuration (seeded by `config.seed`) on the same
    vocabulary and text features, the baseline that says what training adds."""
    import torch


    cfg = config or ProbeConfig()
    tok = MedTokTokenizer.from_pretrained(ckpt, vocab=vocab, graph=graph, text_embeddings=text_embeddings,
                                          progress=progress)
    if untrained:
        torch.manual_seed(cfg.seed)
        fresh = MedTokModel(tok.model.config)
        tok = tok.with_model(fresh)
    res = probe_tokenizer(tok, cfg, heldout_codes=heldout_codes)
    res.update(checkpoint=str(ckpt), untrained=untrained)
    return res
