"""Patient-level bootstrap, vectorised over replicates (EHRSHOT's protocol: 1,000 replicates
resampling unique test PATIENTS with replacement; 2.5-97.5 percentile interval).

A replicate is a vector of per-patient multiplicities (counts), so every sample of a drawn
patient enters with that patient's count as its weight. Weighted average precision and AUROC
are computed for all replicates at once from per-tie-group sums of positive and negative
weight: sparse products of the replicate counts with [K, S] matrices (samples per subject at
each of the K distinct scores that carry a positive), then cumulative sums over K, chunked
over replicates to bound memory.
With integer weights they equal scikit-learn's scores on the explicitly resampled arrays (a
test checks this).

- A replicate in which a label has a single class is skipped for that label and counted.
  Binary: `skipped` replicates. Multi-class / multi-label macro: per replicate the mean over
  the labels (among those with both classes in the full test set) that still have both
  classes; `label_skips` counts the (label, replicate) pairs left out, `skipped` the
  replicates with no usable label at all.
- The replicates are fixed by (the test subjects, `seed`), so two arms scored on the same
  test set share them: `paired_difference` is a paired bootstrap (tokenizer vs flat), with
  each arm's metric averaged over its seeds inside every replicate.
"""

from __future__ import annotations

import numpy as np

DEFAULT_REPLICATES = 1000
_CHUNK_ELEMS = 1 << 22          # replicates x samples per chunk (float32: 16 MiB per array)


def subject_counts(subject_ids, n_boot: int = DEFAULT_REPLICATES, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(counts [R, S] int32: multiplicity of each unique subject in each replicate, inverse [n]:
    each sample's subject column). Deterministic in (the set of subjects, seed)."""
    subjects, inv = np.unique(np.asarray(subject_ids), return_inverse=True)
    s = len(subjects)
    rng = np.random.default_rng([seed, s, 20240601])
    draws = rng.integers(0, s, size=(n_boot, s))
    flat = (draws + (np.arange(n_boot, dtype=np.int64) * s)[:, None]).ravel()
    counts = np.bincount(flat, minlength=n_boot * s).reshape(n_boot, s).astype(np.int32)
    return counts, inv


def _group_matrices(y: np.ndarray, score: np.ndarray, inv: np.ndarray, n_subjects: int):
    """Sparse [K, S] count matrices over the K distinct scores that carry a positive (descending):
    positives at that score, negatives tied with it, and negatives ranked above it down to the
    previous such score (block + tied), plus the negatives per subject [S]. Only scores with a
    positive enter AP and AUROC, so K ~ the number of positives, not of samples."""
    from scipy import sparse

    order = np.argsort(-score, kind="mergesort")
    s, yo, io = score[order], y[order].astype(bool), inv[order]
    group = np.cumsum(np.r_[True, s[1:] != s[:-1]]) - 1 if len(s) else np.zeros(0, np.int64)
    has_pos = np.zeros(int(group.max()) + 1 if len(group) else 0, dtype=bool)
    has_pos[group[yo]] = True
    pos_groups = np.flatnonzero(has_pos)
    # each sample's target: its own positive group, or the next positive group below it
    k = np.searchsorted(pos_groups, group, side="left")
    tail = k >= len(pos_groups)                 # negatives below every positive: only in N
    tied = ~tail & (pos_groups[np.minimum(k, len(pos_groups) - 1)] == group) if len(pos_groups) else tail & False
    K = len(pos_groups)

    def mat(mask):
        return sparse.csr_matrix((np.ones(int(mask.sum()), np.float32), (k[mask], io[mask])), shape=(K, n_subjects))

    neg_vec = np.bincount(io[~yo], minlength=n_subjects).astype(np.float32)
    return mat(yo), mat(~yo & ~tail), mat(~yo & tied), neg_vec


def _ap_auc(mats, Ct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted AP and AUROC of one label for every replicate column of subject counts Ct
    [S, R] (float32, contiguous); NaN where a replicate has a single class."""
    pos_m, neg_m, tied_m, neg_vec = mats
    pos_k = np.asarray(pos_m @ Ct)               # [K, R]
    tp = np.cumsum(pos_k, 0)
    fp = np.cumsum(np.asarray(neg_m @ Ct), 0)    # negatives at or above each positive score
    tied = np.asarray(tied_m @ Ct)
    R = Ct.shape[1]
    P = tp[-1].astype(np.float64) if len(tp) else np.zeros(R)
    N = (neg_vec @ Ct).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = tp + fp
        np.maximum(denom, 1e-12, out=denom)
        ap = np.einsum("kr,kr->r", pos_k, tp / denom) / P      # sum of (pos/P) * precision
        fp -= N.astype(np.float32)                             # -(negatives strictly below)
        fp -= 0.5 * tied
        auc = -np.einsum("kr,kr->r", pos_k, fp) / (P * N)
    bad = (P <= 0) | (N <= 0)
    ap = ap.astype(np.float64)
    auc = auc.astype(np.float64)
    ap[bad] = np.nan
    auc[bad] = np.nan
    return ap, auc


def _chunks(n_boot: int, width: int):
    step = max(1, _CHUNK_ELEMS // max(width, 1))
    for a in range(0, n_boot, step):
        yield slice(a, min(n_boot, a + step))


def _label_matrix(kind: str, y, p) -> tuple[np.ndarray, np.ndarray]:
    if kind == "binary":
        return np.asarray(y).astype(np.int64).reshape(-1, 1), np.asarray(p, dtype=np.float64).reshape(-1, 1)
    P = np.asarray(p, dtype=np.float64)
    if kind == "multiclass":
        y = np.asarray(y, dtype=np.int64).ravel()
        Y = np.zeros(P.shape, dtype=np.int64)
        Y[np.arange(len(y)), y] = 1
        return Y, P
    return np.asarray(y).astype(np.int64), P


def replicate_metrics(kind: str, y, p, counts: np.ndarray, inv: np.ndarray) -> dict:
    """Metric values of every replicate: {name: [R] float, NaN where skipped}, plus
    `label_skips` / `labels_evaluated` for multi-class and multi-label."""
    Y, P = _label_matrix(kind, y, p)
    n, k = Y.shape
    R, S = counts.shape
    if kind == "binary":
        ap, auc, brier = np.empty(R), np.empty(R), np.empty(R)
        mats = _group_matrices(Y[:, 0], P[:, 0], inv, S)
        err = np.bincount(inv, (P[:, 0] - Y[:, 0]) ** 2, minlength=S)
        per = np.bincount(inv, minlength=S).astype(np.float64)
        for sl in _chunks(R, n):
            Ct = np.ascontiguousarray(counts[sl].T, dtype=np.float32)
            ap[sl], auc[sl] = _ap_auc(mats, Ct)
            brier[sl] = (err @ Ct) / (per @ Ct)
        return {"auprc": ap, "auroc": auc, "brier": brier}
    labels = [j for j in range(k) if 0 < Y[:, j].sum() < n]
    ap_l = np.full((R, len(labels)), np.nan)
    auc_l = np.full((R, len(labels)), np.nan)
    ap_mi, auc_mi = np.empty(R), np.empty(R)
    mats = [_group_matrices(Y[:, j], P[:, j], inv, S) for j in labels]
    micro = _group_matrices(Y.ravel(), P.ravel(), np.repeat(inv, k), S)
    for sl in _chunks(R, n * max(k, 1)):
        Ct = np.ascontiguousarray(counts[sl].T, dtype=np.float32)
        for c, m in enumerate(mats):
            ap_l[sl, c], auc_l[sl, c] = _ap_auc(m, Ct)
        ap_mi[sl], auc_mi[sl] = _ap_auc(micro, Ct)
    with np.errstate(all="ignore"), _quiet():
        out = {"auprc_macro": np.nanmean(ap_l, 1) if labels else np.full(R, np.nan),
               "auroc_macro": np.nanmean(auc_l, 1) if labels else np.full(R, np.nan),
               "auprc_micro": ap_mi, "auroc_micro": auc_mi}
    out["label_skips"] = int(np.isnan(ap_l).sum())
    out["labels_evaluated"] = len(labels)
    return out


class _quiet:
    """Silence numpy's 'Mean of empty slice' for replicates where every label is skipped."""

    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


def interval(values: np.ndarray, alpha: float = 0.05) -> dict:
    v = np.asarray(values, dtype=np.float64)
    ok = v[~np.isnan(v)]
    if len(ok) == 0:
        return {"lo": float("nan"), "hi": float("nan"), "valid": 0, "skipped": int(len(v))}
    lo, hi = np.percentile(ok, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return {"lo": float(lo), "hi": float(hi), "valid": int(len(ok)), "skipped": int(len(v) - len(ok))}


def bootstrap_ci(kind: str, y, p, subject_ids, n_boot: int = DEFAULT_REPLICATES, seed: int = 0,
                 alpha: float = 0.05) -> dict:
    """{metric: {lo, hi, valid, skipped}} from `n_boot` patient-level replicates."""
    counts, inv = subject_counts(subject_ids, n_boot, seed)
    reps = replicate_metrics(kind, y, p, counts, inv)
    out = {name: interval(v, alpha) for name, v in reps.items() if isinstance(v, np.ndarray)}
    if "label_skips" in reps:
        out["label_skips"] = reps["label_skips"]
        out["labels_evaluated"] = reps["labels_evaluated"]
    out["replicates"] = int(n_boot)
    return out


def paired_difference(kind: str, y, preds_a: list, preds_b: list, subject_ids, metric: str,
                      n_boot: int = DEFAULT_REPLICATES, seed: int = 0, alpha: float = 0.05) -> dict:
    """metric(A) - metric(B) on the same replicates, each arm averaged over its seeds' predictions
    lists. `diff` is the point estimate on the full test set (seed means); `p_value` is the
    two-sided bootstrap p (twice the smaller tail fraction around 0)."""
    counts, inv = subject_counts(subject_ids, n_boot, seed)
    full = (np.ones((1, counts.shape[1]), dtype=np.int32), inv)

    def arm(preds, c):
        vals = [replicate_metrics(kind, y, pr, *c)[metric] for pr in preds]
        with np.errstate(all="ignore"), _quiet():
            return np.nanmean(np.stack(vals), 0) if len(vals) > 1 else vals[0]

    d = arm(preds_a, (counts, inv)) - arm(preds_b, (counts, inv))
    point = float(arm(preds_a, full)[0] - arm(preds_b, full)[0])
    ci = interval(d, alpha)
    ok = d[~np.isnan(d)]
    p = float(min(1.0, 2 * min((ok <= 0).mean(), (ok >= 0).mean()))) if len(ok) else float("nan")
    return {"metric": metric, "diff": point, **ci, "p_value": p}
