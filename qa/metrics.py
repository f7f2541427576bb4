"""Accuracy with uncertainty, and paired comparison of two systems on the same questions.

Pure functions over 0/1 arrays (one entry per question); no model, no I/O.
"""

from __future__ import annotations

import math

import numpy as np


def _as_bool(x) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"expected a 1-D array of per-question outcomes, got shape {a.shape}")
    if a.dtype != np.bool_ and not np.isin(a, (0, 1)).all():
        raise ValueError("per-question outcomes must be 0/1 or boolean")
    return a.astype(bool)


def accuracy(correct) -> float:
    c = _as_bool(correct)
    return float(c.mean()) if len(c) else float("nan")


def bootstrap_ci(correct, *, n_boot: int = 10_000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) interval of the accuracy, resampling questions."""
    c = _as_bool(correct).astype(np.float64)
    if len(c) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    # the mean of a resample only depends on how many correct items were drawn: binomial
    # draws give exactly the same distribution as index resampling, in O(n_boot)
    means = rng.binomial(len(c), c.mean(), size=n_boot) / len(c)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def accuracy_with_ci(correct, *, n_boot: int = 10_000, seed: int = 0, alpha: float = 0.05) -> dict:
    c = _as_bool(correct)
    lo, hi = bootstrap_ci(c, n_boot=n_boot, seed=seed, alpha=alpha)
    return {"accuracy": accuracy(c), "ci_low": lo, "ci_high": hi, "n": int(len(c)), "n_correct": int(c.sum())}


def mcnemar_p(correct_a, correct_b, *, exact: bool | None = None) -> float:
    """Two-sided McNemar test on the discordant pairs.

    b = a right & b wrong, c = a wrong & b right. exact (default when b + c < 25): binomial
    test, p = min(1, 2 * P[X <= min(b, c)]), X ~ Bin(b + c, 1/2). Otherwise chi-square with
    continuity correction, (|b - c| - 1)^2 / (b + c), 1 degree of freedom.
    """
    a, b_ = _as_bool(correct_a), _as_bool(correct_b)
    if a.shape != b_.shape:
        raise ValueError(f"paired arrays differ in length: {a.shape} vs {b_.shape}")
    b = int((a & ~b_).sum())
    c = int((~a & b_).sum())
    n = b + c
    if n == 0:
        return 1.0
    if exact is None:
        exact = n < 25
    if exact:
        k = min(b, c)
        tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n
        return float(min(1.0, 2.0 * tail))
    stat = (abs(b - c) - 1) ** 2 / n
    return float(math.erfc(math.sqrt(stat / 2.0)))  # chi2(1) survival function


def paired_bootstrap_ci(correct_a, correct_b, *, n_boot: int = 10_000, seed: int = 0,
                        alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval of acc(b) - acc(a), resampling questions jointly."""
    a, b = _as_bool(correct_a), _as_bool(correct_b)
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in length: {a.shape} vs {b.shape}")
    n = len(a)
    if n == 0:
        return float("nan"), float("nan")
    d = b.astype(np.int8) - a.astype(np.int8)  # per-question difference in {-1, 0, 1}
    rng = np.random.default_rng(seed)
    # a resample's mean difference depends only on the counts of +1 / -1 drawn: multinomial
    p = np.array([(d == 1).mean(), (d == -1).mean(), (d == 0).mean()])
    counts = rng.multinomial(n, p / p.sum(), size=n_boot)
    diffs = (counts[:, 0] - counts[:, 1]) / n
    lo, hi = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def paired_comparison(correct_a, correct_b, *, n_boot: int = 10_000, seed: int = 0, alpha: float = 0.05) -> dict:
    """System b versus system a on the same questions: diff = acc(b) - acc(a) with a paired
    bootstrap CI, and the McNemar p-value."""
    a, b = _as_bool(correct_a), _as_bool(correct_b)
    lo, hi = paired_bootstrap_ci(a, b, n_boot=n_boot, seed=seed, alpha=alpha)
    return {
        "diff": accuracy(b) - accuracy(a) if len(a) else float("nan"),
        "ci_low": lo,
        "ci_high": hi,
        "mcnemar_p": mcnemar_p(a, b),
        "n": int(len(a)),
        "a_only": int((a & ~b).sum()),   # questions only system a gets right
        "b_only": int((~a & b).sum()),
    }
