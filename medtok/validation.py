"""Validation kappa during MedTok training (issue 21): a fixed sample of related code pairs from
a validation split, scored with the intrinsic evaluation's chance-corrected overlap.

The validation split (`validation_mask`) is a hashed fraction (`TrainConfig.val_fraction`, salt
"medtok-validation-<val_seed>") of the assignable codes that are
* not MedTok's held-out codes (`medtok.splits.heldout_mask`: the hashed 5% and the explicit list), and
* not in `TrainConfig.val_exclude_codes`: the union of the QA test splits (ontology, relational,
  knowledge graph) over every split seed, written by `scripts/medtok_validation_codes.py` (medtok
  sits below qa, so the list is computed there and passed in as a file).
Pairs (`ValidationSet`): sibling pairs (same parent, same system) and GEM pairs with at least one
code in the validation split and neither code held out or excluded, each with random pairs from
the same systems (validation code first), drawn once from (seed, 21): every evaluation of a run
scores the same pairs. kappa = (O - R) / (1 - R) as `medtok.evaluate.kappa`.

By default the validation codes remain training centres (`val_exclude_from_training=False`): the
training trajectory is then bit-for-bit the run without validation, and validation only chooses
which step is saved. With `val_exclude_from_training` they are never a centre (a true hold-out).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from medbase.hashing import stable_fraction
from medtok.evaluate import GEM_TYPES, kappa, random_pairs_like, sibling_pairs, token_bags, weighted_jaccard
from medtok.model.features import neighbor_table
from medtok.splits import heldout_mask

VAL_METRICS = ("mean", "siblings", "gem")


def validation_mask(vocab, heldout_fraction: float, heldout_codes, exclude_codes, fraction: float,
                    seed: int = 0) -> np.ndarray:
    """Rows of the validation split: assignable codes, neither held out nor excluded, hash < fraction."""
    codes = vocab.codes
    held = heldout_mask(codes["code_id"], codes["kind"], heldout_fraction, heldout_codes)
    excluded = np.zeros(len(codes), dtype=bool)
    if exclude_codes:
        wanted = set(exclude_codes)
        excluded = np.fromiter((c in wanted for c in codes["code_id"]), dtype=bool, count=len(codes))
    salt = f"medtok-validation-{seed}"
    picked = np.fromiter((stable_fraction(str(c), salt) < fraction for c in codes["code_id"]), dtype=bool,
                         count=len(codes))
    return (codes["kind"].to_numpy() == "code") & ~held & ~excluded & picked


def eligible_mask(vocab, heldout_fraction: float, heldout_codes, exclude_codes) -> np.ndarray:
    """Assignable codes that may be the other end of a validation pair (not held out, not excluded)."""
    codes = vocab.codes
    held = heldout_mask(codes["code_id"], codes["kind"], heldout_fraction, heldout_codes)
    out = (codes["kind"].to_numpy() == "code") & ~held
    if exclude_codes:
        wanted = set(exclude_codes)
        out &= ~np.fromiter((c in wanted for c in codes["code_id"]), dtype=bool, count=len(codes))
    return out


@dataclass
class ValidationSet:
    """Fixed related / random pairs (global rows) and the rows to tokenize."""

    siblings: np.ndarray
    siblings_random: np.ndarray
    gem: np.ndarray
    gem_random: np.ndarray
    val_rows: np.ndarray

    @property
    def rows(self) -> np.ndarray:
        return np.unique(np.concatenate([self.siblings.ravel(), self.siblings_random.ravel(), self.gem.ravel(),
                                         self.gem_random.ravel()]))

    @classmethod
    def build(cls, vocab, reference_graph, val: np.ndarray, eligible: np.ndarray, n_pairs: int,
              seed: int = 0) -> "ValidationSet":
        rng = np.random.default_rng([seed, 21])
        systems = vocab.codes["system"].to_numpy()
        val_rows, pool = np.flatnonzero(val), np.flatnonzero(eligible)

        def first_val(p):
            p = p[(val[p[:, 0]] | val[p[:, 1]]) & eligible[p[:, 0]] & eligible[p[:, 1]]]
            return np.where(val[p[:, :1]], p, p[:, ::-1])

        sib = first_val(sibling_pairs(vocab, eligible, rng, max(n_pairs * 20, 1000)))
        if len(sib) > n_pairs:
            sib = sib[np.sort(rng.choice(len(sib), n_pairs, replace=False))]
        names = np.array(reference_graph.edge_type_names)
        gem = np.isin(names[reference_graph.etype], GEM_TYPES)
        gp = first_val(np.stack([reference_graph.src[gem], reference_graph.dst[gem]], 1))
        gp = np.unique(gp, axis=0)
        if len(gp) > n_pairs:
            gp = gp[np.sort(rng.choice(len(gp), n_pairs, replace=False))]
        empty = np.zeros((0, 2), dtype=np.int64)
        sib_r = random_pairs_like(sib, systems, val_rows, pool, rng) if len(sib) else empty
        gem_r = random_pairs_like(gp, systems, val_rows, pool, rng) if len(gp) else empty
        return cls(sib.astype(np.int64), sib_r.astype(np.int64), gp.astype(np.int64), gem_r.astype(np.int64),
                   val_rows)

    def score(self, ids: np.ndarray, weights: np.ndarray, metric: str = "mean") -> dict:
        """kappa of the sibling / GEM pairs from token ids / weights [len(rows), 4, K] of `self.rows`."""
        rows = self.rows
        bag_i, bag_w = token_bags(ids, weights)
        out = {}
        for name, rel, rnd in (("siblings", self.siblings, self.siblings_random), ("gem", self.gem, self.gem_random)):
            if len(rel) == 0:
                out[f"kappa_{name}"] = None
                continue
            a, b = np.searchsorted(rows, rel[:, 0]), np.searchsorted(rows, rel[:, 1])
            ra, rb = np.searchsorted(rows, rnd[:, 0]), np.searchsorted(rows, rnd[:, 1])
            o = weighted_jaccard(bag_i, bag_w, a, b).mean()
            r = weighted_jaccard(bag_i, bag_w, ra, rb).mean()
            out[f"kappa_{name}"] = kappa(o, r)
        vals = [out[f"kappa_{n}"] for n in (("siblings", "gem") if metric == "mean" else (metric,))]
        vals = [v for v in vals if v is not None]
        out["metric"] = float(np.mean(vals)) if vals else float("nan")
        out["pairs"] = {"siblings": int(len(self.siblings)), "gem": int(len(self.gem))}
        return out


class Validator:
    """Scores a model on a `ValidationSet`: one full-graph GNN pass, tokens of the pair rows only."""

    def __init__(self, vset: ValidationSet, x: torch.Tensor, graph, max_neighbors: int, text_only: bool = False,
                 metric: str = "mean"):
        self.vset, self.x, self.metric = vset, x, metric
        if text_only:
            self.ei = torch.empty(2, 0, dtype=torch.long, device="cpu")
        else:
            self.ei = torch.from_numpy(np.stack([np.concatenate([graph.src, graph.dst]),
                                                 np.concatenate([graph.dst, graph.src])]))
        e = self.ei.numpy()
        self.keys = torch.from_numpy(neighbor_table(e[0], e[1], len(x), max_neighbors))  # as the tokenizer's
        self.rows = torch.from_numpy(vset.rows)

    def __call__(self, model) -> dict:
        if len(self.rows) == 0:
            return {"metric": float("nan"), "kappa_siblings": None, "kappa_gem": None}
        ids, w, _ = model.tokenize_graph(self.x, self.ei, self.keys, rows=self.rows, progress=False)
        return self.vset.score(ids.numpy(), w.numpy(), self.metric)
