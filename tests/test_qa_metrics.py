"""Accuracy CIs, McNemar and the paired comparison against hand-computed references."""

import math

import numpy as np
import pytest

from qa.metrics import accuracy, accuracy_with_ci, bootstrap_ci, mcnemar_p, paired_bootstrap_ci, paired_comparison


def test_accuracy_and_input_checks():
    assert accuracy([1, 0, 1, 1]) == 0.75
    assert accuracy(np.array([True, False])) == 0.5
    assert math.isnan(accuracy([]))
    with pytest.raises(ValueError):
        accuracy([0, 2])
    with pytest.raises(ValueError):
        accuracy([[1, 0]])


def test_bootstrap_ci_matches_index_resampling_and_normal_width():
    rng = np.random.default_rng(3)
    c = rng.random(400) < 0.3
    lo, hi = bootstrap_ci(c, n_boot=20_000, seed=1)
    # reference: the textbook bootstrap that resamples question indices
    idx = np.random.default_rng(2).integers(0, len(c), size=(20_000, len(c)))
    ref_lo, ref_hi = np.quantile(c[idx].mean(1), [0.025, 0.975])
    assert abs(lo - ref_lo) <= 0.006 and abs(hi - ref_hi) <= 0.006
    p = c.mean()
    half = 1.96 * math.sqrt(p * (1 - p) / len(c))  # Wald half-width, 0.045 here
    assert lo < p < hi
    assert abs((hi - lo) / 2 - half) < 0.004
    assert bootstrap_ci(c, n_boot=2000, seed=5) == bootstrap_ci(c, n_boot=2000, seed=5)
    # a constant outcome has no spread
    assert bootstrap_ci(np.ones(50, bool)) == (1.0, 1.0)


def test_accuracy_with_ci_fields():
    r = accuracy_with_ci([1, 1, 0, 1, 0, 1, 1, 1], n_boot=1000)
    assert r["accuracy"] == 0.75 and r["n"] == 8 and r["n_correct"] == 6
    assert r["ci_low"] <= 0.75 <= r["ci_high"]


def test_mcnemar_exact_hand_computed():
    # discordant pairs: b = 1 (only A right), c = 6 (only B right); 3 concordant
    a = np.array([1, 0, 0, 0, 0, 0, 0, 1, 1, 0], bool)
    b = np.array([0, 1, 1, 1, 1, 1, 1, 1, 1, 0], bool)
    # P[X <= 1], X ~ Bin(7, 1/2) = (1 + 7) / 128; two-sided = 16/128
    assert mcnemar_p(a, b) == pytest.approx(0.125)
    assert mcnemar_p(b, a) == pytest.approx(0.125)
    assert mcnemar_p(a, a) == 1.0
    # b = c: p = min(1, 2 * P[X <= 2 | n = 4]) = min(1, 2 * 11/16) = 1
    assert mcnemar_p([1, 1, 0, 0], [0, 0, 1, 1]) == 1.0


def test_mcnemar_chi2_hand_computed():
    # b = 10, c = 30: ((|10 - 30| - 1)^2) / 40 = 9.025; chi2(1) sf = erfc(sqrt(9.025 / 2)) = 0.002663
    a = np.r_[np.ones(10), np.zeros(30), np.ones(5)].astype(bool)
    b = np.r_[np.zeros(10), np.ones(30), np.ones(5)].astype(bool)
    assert mcnemar_p(a, b, exact=False) == pytest.approx(0.0026630, rel=1e-3)
    # exact binomial for the same table: 2 * P[X <= 10 | n = 40] = 0.002221
    assert mcnemar_p(a, b, exact=True) == pytest.approx(0.0022210, rel=1e-3)
    assert mcnemar_p(a, b) == mcnemar_p(a, b, exact=False)  # b + c >= 25 -> chi-square


def test_paired_comparison():
    rng = np.random.default_rng(0)
    a = rng.random(300) < 0.5
    b = a.copy()
    flip = rng.choice(300, size=30, replace=False)
    b[flip] = True  # B fixes some of A's errors, never the reverse
    r = paired_comparison(a, b, n_boot=5000, seed=0)
    gained = int((~a[flip]).sum())
    assert r["diff"] == pytest.approx(gained / 300)
    assert r["a_only"] == 0 and r["b_only"] == gained
    assert 0 < r["ci_low"] < r["diff"] < r["ci_high"]
    assert r["mcnemar_p"] == pytest.approx(2 * 0.5 ** gained)
    # same paired data resampled by index gives the same interval (to Monte-Carlo error)
    idx = np.random.default_rng(1).integers(0, 300, size=(5000, 300))
    ref = np.quantile(b[idx].mean(1) - a[idx].mean(1), [0.025, 0.975])
    assert np.allclose([r["ci_low"], r["ci_high"]], ref, atol=0.006)
    # identical systems: zero difference, degenerate CI, p = 1
    same = paired_comparison(a, a)
    assert same["diff"] == 0 and same["ci_low"] == same["ci_high"] == 0 and same["mcnemar_p"] == 1.0
    with pytest.raises(ValueError):
        paired_bootstrap_ci(a, b[:-1])
