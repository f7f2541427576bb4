"""EHR benchmark statistics: metrics against scikit-learn, the patient-level bootstrap on cases
with known answers, paired differences."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from ehr.benchmark.bootstrap import bootstrap_ci, paired_difference, replicate_metrics, subject_counts
from ehr.benchmark.metrics import compute_metrics

Y_BIN = np.array([0, 1, 1, 0, 0, 1, 0, 0, 1, 0, 0, 0])
P_BIN = np.array([0.1, 0.8, 0.35, 0.35, 0.2, 0.9, 0.6, 0.05, 0.35, 0.4, 0.3, 0.2])   # ties on purpose


def test_binary_metrics_equal_sklearn():
    m = compute_metrics("binary", Y_BIN, P_BIN)
    assert m["auprc"] == pytest.approx(average_precision_score(Y_BIN, P_BIN))
    assert m["auroc"] == pytest.approx(roc_auc_score(Y_BIN, P_BIN))
    assert m["brier"] == pytest.approx(brier_score_loss(Y_BIN, P_BIN))
    assert m["prevalence"] == pytest.approx(4 / 12) and m["positives"] == 4 and m["n"] == 12
    # by hand: ranks of positives 0.9 (1/1), 0.8 (2/2), 0.35 x3 with one negative tie, after 0.6 and 0.4
    # at threshold 0.35: tp 4, fp 3 -> precision 4/7 for the last two positives' recall step (2/4)
    assert m["auprc"] == pytest.approx(0.25 * 1 + 0.25 * 1 + 0.5 * 4 / 7)


def test_multiclass_and_multilabel_macro_micro_equal_sklearn():
    rng = np.random.default_rng(3)
    y = np.array([0, 1, 2, 2, 1, 0, 2, 1, 1, 0, 2, 2])
    P = rng.dirichlet(np.ones(3), size=len(y))
    m = compute_metrics("multiclass", y, P, ["a", "b", "c"])
    Y = np.eye(3)[y]
    assert m["auroc_macro"] == pytest.approx(roc_auc_score(y, P, multi_class="ovr", average="macro"))
    assert m["auprc_macro"] == pytest.approx(average_precision_score(Y, P, average="macro"))
    assert m["auprc_micro"] == pytest.approx(average_precision_score(Y, P, average="micro"))
    assert m["auroc_micro"] == pytest.approx(roc_auc_score(Y, P, average="micro"))
    assert m["accuracy"] == pytest.approx(np.mean(P.argmax(1) == y))

    Yl = (rng.random((12, 4)) < 0.4).astype(int)
    Yl[:, 3] = 0                                         # a label with no positive in test
    Pl = rng.random((12, 4))
    ml = compute_metrics("multilabel", Yl, Pl)
    assert ml["labels_evaluated"] == 3 and ml["labels_total"] == 4
    assert ml["auprc_macro"] == pytest.approx(average_precision_score(Yl[:, :3], Pl[:, :3], average="macro"))
    assert ml["auprc_micro"] == pytest.approx(average_precision_score(Yl, Pl, average="micro"))
    assert ml["auroc_macro"] == pytest.approx(roc_auc_score(Yl[:, :3], Pl[:, :3], average="macro"))
    assert np.isnan(ml["per_label"]["3"]["auprc"])


def test_replicates_equal_sklearn_on_resampled_arrays():
    rng = np.random.default_rng(0)
    n = 50
    subj = rng.integers(0, 20, n)
    y = (rng.random(n) < 0.3).astype(int)
    p = np.round(rng.random(n), 1)                        # many ties
    counts, inv = subject_counts(subj, 40, seed=1)
    reps = replicate_metrics("binary", y, p, counts, inv)
    checked = 0
    for r in range(40):
        idx = np.repeat(np.arange(n), counts[r][inv])     # the replicate as explicit rows
        if 0 < y[idx].sum() < len(idx):
            assert reps["auprc"][r] == pytest.approx(average_precision_score(y[idx], p[idx]), abs=1e-6)
            assert reps["auroc"][r] == pytest.approx(roc_auc_score(y[idx], p[idx]), abs=1e-6)
            assert reps["brier"][r] == pytest.approx(brier_score_loss(y[idx], p[idx]), abs=1e-9)
            checked += 1
        else:
            assert np.isnan(reps["auprc"][r])
    assert checked > 30
    Y = (rng.random((n, 3)) < 0.3).astype(int)
    P = rng.random((n, 3))
    reps = replicate_metrics("multilabel", Y, P, counts, inv)
    idx = np.repeat(np.arange(n), counts[0][inv])
    assert reps["auprc_micro"][0] == pytest.approx(average_precision_score(Y[idx].ravel(), P[idx].ravel()), abs=1e-6)
    ok = [j for j in range(3) if 0 < Y[idx, j].sum() < len(idx)]
    assert reps["auprc_macro"][0] == pytest.approx(np.mean([average_precision_score(Y[idx, j], P[idx, j]) for j in ok]), abs=1e-6)


def test_bootstrap_resamples_patients_not_samples():
    # two patients, ten samples each, one all-positive and one all-negative: a replicate has both
    # classes only when it draws both patients (probability 1/2), so about half are skipped;
    # resampling samples instead would almost never produce a single-class replicate
    subj = np.repeat([1, 2], 10)
    y = np.repeat([1, 0], 10)
    p = np.linspace(0.9, 0.1, 20)
    ci = bootstrap_ci("binary", y, p, subj, n_boot=1000, seed=0)
    assert 1000 * 0.5 - 60 < ci["auprc"]["skipped"] < 1000 * 0.5 + 60     # ~4 sd of Binomial(1000, 0.5)
    assert ci["auprc"]["lo"] == pytest.approx(1.0) and ci["auprc"]["hi"] == pytest.approx(1.0)


def test_bootstrap_known_answers():
    # one positive patient among 10: a replicate misses it with probability (9/10)^10 = 0.3487
    y = np.array([1] + [0] * 9)
    p = np.linspace(1, 0, 10)
    ci = bootstrap_ci("binary", y, p, np.arange(10), n_boot=1000, seed=0)
    assert abs(ci["auprc"]["skipped"] - 348.7) < 4 * np.sqrt(1000 * 0.3487 * 0.6513)
    assert ci["auroc"]["lo"] == 1.0 and ci["auprc"]["hi"] == 1.0          # perfect ranking stays perfect
    # Brier score = a mean of iid per-patient errors: the percentile CI matches the normal one
    rng = np.random.default_rng(5)
    n = 4000
    y = (rng.random(n) < 0.3).astype(int)
    p = np.clip(0.3 + 0.2 * rng.standard_normal(n), 0, 1)
    err = (p - y) ** 2
    ci = bootstrap_ci("binary", y, p, np.arange(n), n_boot=1000, seed=0)["brier"]
    half = 1.96 * err.std(ddof=1) / np.sqrt(n)
    assert (ci["hi"] - ci["lo"]) / 2 == pytest.approx(half, rel=0.15)
    assert ci["lo"] < err.mean() < ci["hi"]


def test_paired_difference_uses_the_same_replicates():
    rng = np.random.default_rng(1)
    n = 200
    subj = rng.integers(0, 80, n)
    y = (rng.random(n) < 0.25).astype(int)
    a = np.clip(y * 0.3 + rng.random(n) * 0.7, 0, 1)
    same = paired_difference("binary", y, [a], [a.copy()], subj, "auprc", n_boot=300)
    assert same["diff"] == 0 and same["lo"] == 0 and same["hi"] == 0      # identical arms: zero on every replicate
    noise = rng.random(n)
    d = paired_difference("binary", y, [a, a], [noise], subj, "auprc", n_boot=300)
    assert d["diff"] == pytest.approx(average_precision_score(y, a) - average_precision_score(y, noise))
    assert d["lo"] > 0 and d["p_value"] < 0.01


def test_many_label_bootstrap_is_vectorised():
    # 25 labels x 2,000 samples x 1,000 replicates: one pass of sparse products, not 25,000 sklearn calls
    rng = np.random.default_rng(2)
    n = 2000
    Y = (rng.random((n, 25)) < 0.1).astype(int)
    P = rng.random((n, 25))
    ci = bootstrap_ci("multilabel", Y, P, rng.integers(0, 1500, n), n_boot=1000)
    assert ci["labels_evaluated"] == 25 and ci["auprc_macro"]["valid"] == 1000
    assert ci["auprc_macro"]["lo"] < average_precision_score(Y, P, average="macro") < ci["auprc_macro"]["hi"]
