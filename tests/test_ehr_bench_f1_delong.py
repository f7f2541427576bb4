"""Issue 22 metrics: F1-macro at a threshold tuned on the tuning split only, DeLong's paired AUROC
test (checked against quantities computed independently: scikit-learn's AUROC, a brute-force
structural-components variance from the definition, and Hanley & McNeil's 1982 worked example),
and the paired patient-level bootstrap of F1-macro."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from ehr.benchmark.bootstrap import subject_counts
from ehr.benchmark.metrics import (F1_FALLBACK_THRESHOLD, choose_threshold, delong_components, delong_test, f1_macro,
                                   f1_at_tuned_threshold, paired_bootstrap_f1, replicate_f1)


def test_f1_macro_equals_sklearn():
    rng = np.random.default_rng(0)
    y = rng.random(50) < 0.3
    yhat = rng.random(50) < 0.4
    assert f1_macro(y, yhat) == pytest.approx(f1_score(y, yhat, average="macro", labels=[0, 1], zero_division=0))


def test_threshold_is_the_tuning_argmax_by_brute_force():
    rng = np.random.default_rng(1)
    y = rng.random(80) < 0.25
    p = np.round(np.clip(0.3 * y + rng.random(80) * 0.7, 0, 1), 2)    # ties on purpose
    t, how = choose_threshold(y, p)
    brute = max(np.unique(p), key=lambda c: (f1_score(y, p >= c, average="macro", zero_division=0), -c))
    assert t == pytest.approx(brute) and "tuning" in how


def test_threshold_never_sees_test_labels():
    rng = np.random.default_rng(2)
    y_tune, p_tune = rng.random(40) < 0.3, rng.random(40)
    p_test = rng.random(60)
    outs = [f1_at_tuned_threshold(y_tune, p_tune, rng.random(60) < q, p_test) for q in (0.05, 0.5, 0.95)]
    # any test labels, same threshold; the test F1 changes with them
    assert len({o["f1_threshold"] for o in outs}) == 1
    assert len({round(o["f1_macro"], 9) for o in outs}) == 3
    # and it is the tuning split's own choice
    assert outs[0]["f1_threshold"] == choose_threshold(y_tune, p_tune)[0]


def test_threshold_fallback_without_tuning_positive():
    t, how = choose_threshold(np.zeros(10, bool), np.linspace(0, 1, 10))
    assert t == F1_FALLBACK_THRESHOLD and "no positive" in how
    t, how = choose_threshold(np.zeros(0, bool), np.zeros(0))
    assert t == F1_FALLBACK_THRESHOLD and "empty" in how


def _brute_delong(y, scores):
    """DeLong's structural components straight from the definition (psi = 1, 1/2, 0), O(m n)."""
    y = np.asarray(y).astype(bool)
    v10, v01 = [], []
    for s in scores:
        x, z = s[y][:, None], s[~y][None, :]
        psi = (x > z) + 0.5 * (x == z)
        v10.append(psi.mean(1))
        v01.append(psi.mean(0))
    v10, v01 = np.array(v10), np.array(v01)
    return np.cov(v10) / y.sum() + np.cov(v01) / (~y).sum()


def test_delong_against_sklearn_and_the_definition():
    rng = np.random.default_rng(3)
    y = rng.random(70) < 0.4
    a = np.round(y * 0.8 + rng.normal(size=70), 1)          # ties
    b = np.round(y * 0.3 + rng.normal(size=70), 1)
    aucs, cov = delong_components(y, [a, b])
    assert aucs[0] == pytest.approx(roc_auc_score(y, a)) and aucs[1] == pytest.approx(roc_auc_score(y, b))
    np.testing.assert_allclose(cov, _brute_delong(y, [a, b]), rtol=1e-10)
    r = delong_test(y, a, b)
    from scipy.stats import norm
    ref = _brute_delong(y, [a, b])
    z = (roc_auc_score(y, a) - roc_auc_score(y, b)) / np.sqrt(ref[0, 0] + ref[1, 1] - 2 * ref[0, 1])
    assert r["z"] == pytest.approx(z) and r["p_value"] == pytest.approx(2 * norm.sf(abs(z)))
    same = delong_test(y, a, a)
    assert same["diff"] == 0 and same["p_value"] == 1.0


def test_delong_on_hanley_mcneil_1982_worked_example():
    """Hanley & McNeil (Radiology 1982, Table 1): 58 normal and 51 abnormal CT images rated on
    five levels; published AUROC 0.893 with standard error 0.032 (their exponential
    approximation; DeLong's nonparametric SE is close to it)."""
    normal = [33, 6, 6, 11, 2]
    abnormal = [3, 2, 2, 11, 33]
    s = np.concatenate([np.repeat(np.arange(1, 6), normal), np.repeat(np.arange(1, 6), abnormal)]).astype(float)
    y = np.concatenate([np.zeros(58, bool), np.ones(51, bool)])
    aucs, cov = delong_components(y, [s])
    assert aucs[0] == pytest.approx(0.893, abs=5e-4)
    assert np.sqrt(cov[0, 0]) == pytest.approx(0.032, abs=0.003)


def test_paired_bootstrap_f1_on_explicit_resamples():
    rng = np.random.default_rng(4)
    subj = np.repeat(np.arange(15), 3)
    y = rng.random(45) < 0.4
    ya, yb = rng.random(45) < 0.5, y ^ (rng.random(45) < 0.2)
    counts, inv = subject_counts(subj, 30, 0)
    reps = replicate_f1(y, ya, counts, inv)
    for r in range(5):     # weighted F1 = F1 on the explicitly resampled samples
        idx = np.concatenate([np.flatnonzero(inv == s_) for s_ in range(15) for _ in range(counts[r, s_])])
        if 0 < y[idx].sum() < len(idx):
            assert reps[r] == pytest.approx(f1_score(y[idx], ya[idx], average="macro", zero_division=0))
    d = paired_bootstrap_f1(y, yb, ya, subj, 200, 0)
    assert d["diff"] == pytest.approx(f1_macro(y, yb) - f1_macro(y, ya))
    assert d["lo"] <= d["diff"] <= d["hi"]
    zero = paired_bootstrap_f1(y, ya, ya, subj, 50, 0)
    assert zero["diff"] == 0 and zero["lo"] == 0 and zero["hi"] == 0
