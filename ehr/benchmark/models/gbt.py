"""Non-neural baselines on bag-of-codes counts (scikit-learn): gradient-boosted trees ("gbt",
HistGradientBoosting) and L2 logistic regression ("logreg").

Features per tokenizer (`bag_features`), from the counts of each sample's input codes:
- flat: one count column per code seen in training + one column counting unseen codes;
- hier-XYZ: flat + count columns of the enabled levels' keys (G0 chapter, G1 block, G2
  category) seen in training, so an unseen code still counts towards its category;
- text / medtok*: non-vocabulary codes as in flat + the count-weighted mean of the frozen
  vectors of the sample's vocabulary codes (what the neural models see, pooled);
- medtok-ids: non-vocabulary codes as in flat + count-weighted MedTok token-id counts.
Count columns are capped to the `max_count_columns` most frequent in training (document
frequency). Defaults (fixed): gbt 100 iterations, learning rate 0.1, 15 leaves, L2 1.0, no
early stopping; logreg C = 1 on log1p counts. Multi-label: one model per label; a label or
class absent from training gets its training prevalence (0) as prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from ehr.benchmark.tokenizers import Resources, parse_spec
from medbase.jsonconfig import JsonConfig

TREE_MODELS = ("gbt", "logreg")


@dataclass
class TreeConfig(JsonConfig):
    max_iter: int = 100
    learning_rate: float = 0.1
    max_leaf_nodes: int = 15
    l2_regularization: float = 1.0
    logreg_c: float = 1.0
    max_count_columns: int = 2000


def _indicator(keys: np.ndarray, seen: np.ndarray) -> sparse.csr_matrix:
    """[V, n_keys] 0/1: code -> its key, keys restricted to those of training codes."""
    allowed = sorted({k for k, s in zip(keys, seen) if s and k is not None})
    col = {k: i for i, k in enumerate(allowed)}
    rows = [i for i, k in enumerate(keys) if k in col]
    cols = [col[keys[i]] for i in rows]
    return sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(keys), len(allowed)))


def bag_features(spec: str, bag: sparse.csr_matrix, seen: np.ndarray, res: Resources) -> tuple[sparse.csr_matrix, list[str]]:
    """Feature matrix [n, F] (sparse) and column group names for tokenizer `spec`."""
    p = parse_spec(spec)
    V = bag.shape[1]
    own = np.zeros(V, dtype=bool)
    blocks, names = [], []
    if p["family"] in ("text", "medtok", "medtok-ids"):
        if p["family"] == "text":
            vec, found = res.text, res.text_found
        else:
            vec, ids, w, found = res.medtok[p["variant"]]
        found = found.astype(bool)
        oos = (res.in_vocab.astype(bool) & ~found) if res.in_vocab is not None else np.zeros(V, bool)
        own = found | oos
        sub = bag[:, np.flatnonzero(found)]
        if p["family"] == "medtok-ids":
            n_cb = int(ids.max()) + 1
            r = np.repeat(np.arange(V), ids.reshape(V, -1).shape[1])
            ww = w.reshape(V, -1) / np.maximum(w.reshape(V, -1).sum(1, keepdims=True), 1e-9)
            A = sparse.csr_matrix((ww.ravel(), (r, ids.reshape(-1))), shape=(V, n_cb))[np.flatnonzero(found)]
            blocks.append(sparse.csr_matrix(sub @ A))
            names.append("medtok_ids")
        else:
            flatv = vec.reshape(V, -1)[found]
            tot = np.asarray(sub.sum(1)).ravel()
            mean = (sub @ flatv) / np.maximum(tot, 1)[:, None]
            blocks.append(sparse.csr_matrix(mean.astype(np.float32)))
            names.append("mean_vector")
        unk_oos = np.asarray(bag[:, np.flatnonzero(oos)].sum(1)).reshape(-1, 1)
        blocks.append(sparse.csr_matrix(unk_oos))
        names.append("out_of_system")
    keep = seen.astype(bool) & ~own
    keep[0] = False
    unseen = ~seen.astype(bool) & ~own
    unseen[0] = False
    blocks.insert(0, bag[:, np.flatnonzero(keep)])
    names.insert(0, "codes")
    blocks.insert(1, sparse.csr_matrix(np.asarray(bag[:, np.flatnonzero(unseen)].sum(1)).reshape(-1, 1)))
    names.insert(1, "unseen")
    if p["family"] == "hier":
        for j, on in enumerate(p["levels"]):
            if on:
                blocks.append(sparse.csr_matrix(bag @ _indicator(res.levels[:, j], seen)))
                names.append(f"G{j}")
    return sparse.hstack(blocks, format="csr"), names


def _cap_columns(X: sparse.csr_matrix, train: np.ndarray, k: int) -> np.ndarray:
    df = np.asarray((X[train] > 0).sum(0)).ravel()
    if X.shape[1] <= k:
        return np.flatnonzero(df > 0) if (df > 0).any() else np.arange(X.shape[1])
    return np.sort(np.argsort(-df, kind="stable")[:k])


def _fit_one(model: str, X, y, cfg: TreeConfig, seed: int, n_classes: int):
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    if model == "gbt":
        clf = HistGradientBoostingClassifier(max_iter=cfg.max_iter, learning_rate=cfg.learning_rate,
                                             max_leaf_nodes=cfg.max_leaf_nodes, l2_regularization=cfg.l2_regularization,
                                             early_stopping=False, random_state=seed)
    else:
        clf = LogisticRegression(C=cfg.logreg_c, max_iter=2000, random_state=seed)
    return clf.fit(X, y)


def _proba(clf, X, n_classes: int) -> np.ndarray:
    p = clf.predict_proba(X)
    out = np.zeros((X.shape[0], n_classes))
    out[:, clf.classes_.astype(int)] = p
    return out


def fit_predict(model: str, kind: str, X: sparse.csr_matrix, y: np.ndarray, train: np.ndarray, predict_rows: np.ndarray,
                cfg: TreeConfig, seed: int, n_classes: int) -> np.ndarray:
    """Fit on `train` rows; probabilities for `predict_rows` ([m] binary, [m, K] otherwise)."""
    cols = _cap_columns(X, train, cfg.max_count_columns)
    X = X[:, cols]
    if model == "logreg":
        X = X.copy()
        X.data = np.log1p(np.maximum(X.data, 0)) * np.sign(X.data)
        Xtr, Xte = X[train], X[predict_rows]
    else:
        Xtr, Xte = X[train].toarray(), X[predict_rows].toarray()
    if kind == "multilabel":
        out = np.zeros((len(predict_rows), y.shape[1]))
        for j in range(y.shape[1]):
            yj = y[train, j]
            if yj.min() == yj.max():
                out[:, j] = float(yj.mean()) if len(yj) else 0.0
            else:
                out[:, j] = _proba(_fit_one(model, Xtr, yj, cfg, seed, 2), Xte, 2)[:, 1]
        return out
    ytr = y[train]
    k = 2 if kind == "binary" else n_classes
    if len(np.unique(ytr)) < 2:
        const = np.bincount(ytr, minlength=k) / max(len(ytr), 1)
        out = np.tile(const, (len(predict_rows), 1))
    else:
        out = _proba(_fit_one(model, Xtr, ytr, cfg, seed, k), Xte, k)
    return out[:, 1] if kind == "binary" else out
