"""Metrics as pure functions over arrays of the WHOLE (pooled) test set.

- AUPRC = scikit-learn `average_precision_score` (step-wise average precision over the pooled
  predictions: never per batch, never from ROC points or a trapezoid); AUROC = `roc_auc_score`;
  Brier score for binary tasks; the prevalence is reported next to every AUPRC (the AUPRC of a
  random ranking).
- Multi-class and multi-label: one-vs-rest per class/label; "macro" = unweighted mean over the
  labels that have both classes in the test set (the count is reported as `labels_evaluated`
  of `labels_total`), "micro" = one AUPRC/AUROC over all (sample, label) pairs pooled. For
  multi-class, accuracy (argmax) too.
- A metric that is undefined (a single class in the test set) is NaN, never a crash.
- Binary, the hierarchical-ICD paper's metrics (issue 22): F1-macro at a threshold chosen on
  the tuning split only (`choose_threshold`; fallback 0.5 when tuning has no positive or no
  negative), DeLong's paired AUROC test (`delong_test`), the paired patient-level bootstrap of
  F1-macro on the AUPRC bootstrap's replicates (`paired_bootstrap_f1`).

Inputs: `y` is [n] bool/int for binary, [n] ints 0..K-1 for multi-class, [n, K] 0/1 for
multi-label; `p` is [n] (probability of the positive class) for binary, [n, K] otherwise.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from ehr.benchmark.bootstrap import interval, subject_counts

KINDS = ("binary", "multiclass", "multilabel")


def _two_classes(y: np.ndarray) -> bool:
    return 0 < int(y.sum()) < len(y)


def binary_metrics(y, p) -> dict:
    y = np.asarray(y).astype(np.int64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and predictions {p.shape} differ")
    ok = _two_classes(y)
    return {
        "n": int(len(y)),
        "positives": int(y.sum()),
        "prevalence": float(y.mean()) if len(y) else float("nan"),
        "auprc": float(average_precision_score(y, p)) if ok else float("nan"),
        "auroc": float(roc_auc_score(y, p)) if ok else float("nan"),
        "brier": float(brier_score_loss(y, p)) if len(y) else float("nan"),
    }


def one_hot(y, k: int) -> np.ndarray:
    y = np.asarray(y, dtype=np.int64).ravel()
    if len(y) and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"class index out of range 0..{k - 1}")
    out = np.zeros((len(y), k), dtype=np.int64)
    out[np.arange(len(y)), y] = 1
    return out


def label_matrix_metrics(Y, P, names: list[str] | None = None) -> dict:
    """One-vs-rest metrics of an [n, K] 0/1 label matrix against [n, K] scores."""
    Y = np.asarray(Y).astype(np.int64)
    P = np.asarray(P, dtype=np.float64)
    if Y.shape != P.shape or Y.ndim != 2:
        raise ValueError(f"labels {Y.shape} and predictions {P.shape} must both be [n, K]")
    n, k = Y.shape
    names = names or [str(i) for i in range(k)]
    per = {}
    ap, auc = [], []
    for j in range(k):
        ok = _two_classes(Y[:, j])
        a = float(average_precision_score(Y[:, j], P[:, j])) if ok else float("nan")
        r = float(roc_auc_score(Y[:, j], P[:, j])) if ok else float("nan")
        per[names[j]] = {"positives": int(Y[:, j].sum()), "prevalence": float(Y[:, j].mean()) if n else float("nan"),
                         "auprc": a, "auroc": r}
        if ok:
            ap.append(a)
            auc.append(r)
    flat_y, flat_p = Y.ravel(), P.ravel()
    ok = _two_classes(flat_y)
    return {
        "n": int(n),
        "positives": {nm: per[nm]["positives"] for nm in names},
        "prevalence_micro": float(flat_y.mean()) if n else float("nan"),
        "prevalence_macro": float(np.mean([per[names[j]]["prevalence"] for j in range(k)
                                           if _two_classes(Y[:, j])])) if ap else float("nan"),
        "auprc_macro": float(np.mean(ap)) if ap else float("nan"),
        "auroc_macro": float(np.mean(auc)) if auc else float("nan"),
        "auprc_micro": float(average_precision_score(flat_y, flat_p)) if ok else float("nan"),
        "auroc_micro": float(roc_auc_score(flat_y, flat_p)) if ok else float("nan"),
        "labels_evaluated": len(ap),
        "labels_total": int(k),
        "per_label": per,
    }


def multiclass_metrics(y, P, names: list[str] | None = None) -> dict:
    P = np.asarray(P, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64).ravel()
    out = label_matrix_metrics(one_hot(y, P.shape[1]), P, names)
    out["accuracy"] = float((P.argmax(1) == y).mean()) if len(y) else float("nan")
    return out


def compute_metrics(kind: str, y, p, names: list[str] | None = None) -> dict:
    """The metric set of a task kind, with `headline` = the AUPRC the tables lead with
    (binary: AUPRC; multi-class / multi-label: macro AUPRC) and its matching prevalence."""
    if kind == "binary":
        m = binary_metrics(y, p)
        m["headline_auprc"], m["headline_prevalence"] = m["auprc"], m["prevalence"]
        m["headline_auroc"] = m["auroc"]
    elif kind == "multiclass":
        m = multiclass_metrics(y, p, names)
    elif kind == "multilabel":
        m = label_matrix_metrics(y, p, names)
    else:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind != "binary":
        m["headline_auprc"], m["headline_prevalence"] = m["auprc_macro"], m["prevalence_macro"]
        m["headline_auroc"] = m["auroc_macro"]
    return m


# ---- F1-macro at a tuned threshold, DeLong's paired AUROC test, paired bootstrap of F1 -------
# (issue 22: the hierarchical-ICD paper's metrics). Binary tasks only.

F1_FALLBACK_THRESHOLD = 0.5


def f1_macro(y, yhat) -> float:
    """Unweighted mean of the F1 of the positive and of the negative class (scikit-learn's
    `f1_score(average="macro")` over labels {0, 1}; a class with no true and no predicted member
    has F1 0, as scikit-learn's `zero_division=0`)."""
    y = np.asarray(y).astype(bool).ravel()
    yhat = np.asarray(yhat).astype(bool).ravel()
    out = []
    for cls in (True, False):
        t, h = y == cls, yhat == cls
        tp = float((t & h).sum())
        den = 2 * tp + float((~t & h).sum()) + float((t & ~h).sum())
        out.append(2 * tp / den if den else 0.0)
    return float(np.mean(out))


def choose_threshold(y_tune, p_tune) -> tuple[float, str]:
    """The threshold that maximises F1-macro on the TUNING split (the rule `p >= t`; candidates:
    the distinct tuning scores, ties -> the smallest such t). It sees tuning labels and scores
    only. Fallback (stated): when the tuning split is empty or has no positive or no negative,
    t = 0.5 (`F1_FALLBACK_THRESHOLD`). Returns (t, how)."""
    y = np.asarray(y_tune).astype(bool).ravel()
    p = np.asarray(p_tune, dtype=np.float64).ravel()
    if len(y) == 0 or y.all() or not y.any():
        why = "empty tuning split" if len(y) == 0 else ("no positive" if not y.any() else "no negative")
        return F1_FALLBACK_THRESHOLD, f"fallback {F1_FALLBACK_THRESHOLD} ({why} in tuning)"
    cand = np.unique(p)
    # vectorised: predictions p >= c for every candidate c
    order = np.argsort(-p, kind="mergesort")
    ps, ys = p[order], y[order]
    P, N = int(y.sum()), int((~y).sum())
    tp_c, fp_c = np.cumsum(ys), np.cumsum(~ys)
    # for candidate c: count of p >= c = last index with ps >= c
    k = np.searchsorted(-ps, -cand, side="right")        # number of samples with p >= c
    tp, fp = tp_c[k - 1].astype(float), fp_c[k - 1].astype(float)
    fn, tn = P - tp, N - fp
    f1_pos = 2 * tp / np.maximum(2 * tp + fp + fn, 1e-12)
    f1_neg = 2 * tn / np.maximum(2 * tn + fn + fp, 1e-12)
    f1 = (f1_pos + f1_neg) / 2
    best = np.flatnonzero(f1 >= f1.max() - 1e-12)
    return float(cand[best[0]]), "max F1-macro on tuning"


def f1_at_tuned_threshold(y_tune, p_tune, y_test, p_test) -> dict:
    """F1-macro of the test predictions at the threshold chosen on tuning (`choose_threshold`)."""
    t, how = choose_threshold(y_tune, p_tune)
    yhat = np.asarray(p_test, dtype=np.float64).ravel() >= t
    return {"f1_macro": f1_macro(y_test, yhat) if len(yhat) else float("nan"), "f1_threshold": t,
            "f1_threshold_rule": how, "f1_tuning_n": int(len(np.asarray(y_tune).ravel()))}


def _midrank(x: np.ndarray) -> np.ndarray:
    """Mid-ranks (1-based; ties share the mean rank)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    n = len(x)
    ranks = np.zeros(n)
    i = 0
    while i < n:
        j = i
        while j < n and xs[j] == xs[i]:
            j += 1
        ranks[i:j] = 0.5 * (i + j - 1) + 1
        i = j
    out = np.empty(n)
    out[order] = ranks
    return out


def delong_components(y, scores: list) -> tuple[np.ndarray, np.ndarray]:
    """AUROCs [k] and DeLong's covariance matrix [k, k] of k score vectors on the same samples
    (DeLong, DeLong & Clarke-Pearson 1988; the mid-rank algorithm of Sun & Xu 2014):
    structural components V10 (per positive) and V01 (per negative), cov = S10/m + S01/n."""
    y = np.asarray(y).astype(bool).ravel()
    X = np.asarray([np.asarray(s, dtype=np.float64).ravel() for s in scores])
    m, n = int(y.sum()), int((~y).sum())
    if m == 0 or n == 0:
        k = len(X)
        return np.full(k, np.nan), np.full((k, k), np.nan)
    pos, neg = X[:, y], X[:, ~y]
    aucs, v10, v01 = [], [], []
    for r in range(len(X)):
        tz = _midrank(np.concatenate([pos[r], neg[r]]))
        tx, ty = _midrank(pos[r]), _midrank(neg[r])
        aucs.append((tz[:m].sum() - m * (m + 1) / 2) / (m * n))
        v10.append((tz[:m] - tx) / n)
        v01.append(1.0 - (tz[m:] - ty) / m)
    v10, v01 = np.array(v10), np.array(v01)
    s10 = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((len(X), len(X)))
    s01 = np.atleast_2d(np.cov(v01)) if n > 1 else np.zeros((len(X), len(X)))
    return np.array(aucs), s10 / m + s01 / n


def delong_test(y, p_a, p_b) -> dict:
    """Paired two-sided DeLong test of AUROC(A) = AUROC(B) on the same test samples:
    z = (A - B) / sqrt(var A + var B - 2 cov), p = 2 (1 - Phi(|z|)). Identical scores: z = 0, p = 1."""
    aucs, cov = delong_components(y, [p_a, p_b])
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    if not np.isfinite(var):
        z = p = float("nan")
    elif var <= 1e-15:
        z, p = 0.0 if abs(diff) < 1e-15 else float(np.sign(diff) * np.inf), 1.0 if abs(diff) < 1e-15 else 0.0
    else:
        z = diff / np.sqrt(var)
        p = float(2 * norm.sf(abs(z)))
    se = float(np.sqrt(max(var, 0.0))) if np.isfinite(var) else float("nan")
    return {"auroc_a": float(aucs[0]), "auroc_b": float(aucs[1]), "diff": diff, "se": se, "z": float(z),
            "p_value": float(p), "ci_lo": diff - 1.959963984540054 * se, "ci_hi": diff + 1.959963984540054 * se}


def _subject_confusion(y, yhat, inv, n_subjects) -> np.ndarray:
    """[4, S] per-subject counts of tp, fp, fn, tn."""
    y, yhat = np.asarray(y).astype(bool), np.asarray(yhat).astype(bool)
    cells = [y & yhat, ~y & yhat, y & ~yhat, ~y & ~yhat]
    return np.stack([np.bincount(inv, weights=c.astype(float), minlength=n_subjects) for c in cells])


def _f1_macro_from_counts(tp, fp, fn, tn):
    with np.errstate(all="ignore"):
        a = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        b = np.where(2 * tn + fn + fp > 0, 2 * tn / (2 * tn + fn + fp), 0.0)
    return (a + b) / 2


def replicate_f1(y, yhat, counts: np.ndarray, inv: np.ndarray) -> np.ndarray:
    """F1-macro of fixed 0/1 predictions in every patient-level replicate ([R] from the
    `bootstrap.subject_counts` multiplicities; a replicate with a single class -> NaN)."""
    C = _subject_confusion(y, yhat, inv, counts.shape[1])       # [4, S]
    tp, fp, fn, tn = (counts.astype(np.float64) @ C.T).T
    f1 = _f1_macro_from_counts(tp, fp, fn, tn)
    single = ((tp + fn) == 0) | ((fp + tn) == 0)
    return np.where(single, np.nan, f1)


def paired_bootstrap_f1(y, yhat_a, yhat_b, subject_ids, n_boot: int = 1000, seed: int = 0,
                        alpha: float = 0.05) -> dict:
    """F1-macro(A) - F1-macro(B) on the SAME patient-level replicates as the AUPRC bootstrap
    (`bootstrap.subject_counts(subject_ids, n_boot, seed)`); each arm's 0/1 predictions use its
    own tuning-split threshold. Two-sided p as `bootstrap.paired_difference`."""
    counts, inv = subject_counts(subject_ids, n_boot, seed)
    d = replicate_f1(y, yhat_a, counts, inv) - replicate_f1(y, yhat_b, counts, inv)
    ci = interval(d, alpha)
    ok = d[~np.isnan(d)]
    p = float(min(1.0, 2 * min((ok <= 0).mean(), (ok >= 0).mean()))) if len(ok) else float("nan")
    return {"metric": "f1_macro", "diff": f1_macro(y, yhat_a) - f1_macro(y, yhat_b), **ci, "p_value": p}
