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

Inputs: `y` is [n] bool/int for binary, [n] ints 0..K-1 for multi-class, [n, K] 0/1 for
multi-label; `p` is [n] (probability of the positive class) for binary, [n, K] otherwise.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

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
