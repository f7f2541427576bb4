"""A fitted scikit-learn HistGradientBoostingClassifier as plain arrays, and a numpy evaluator for them.

Why: the re-ranker's trees used to be stored with joblib (pickle), and unpickling a file runs
whatever code the file names, so a linker directory received from someone else could execute
code on load. Here the trees are exported to numeric arrays (`np.savez`, read back with
`allow_pickle=False`), and prediction is a few lines of numpy that reproduce sklearn's own
traversal (`_predictor.pyx`): at a split, NaN goes where `missing_go_to_left` says, any other
value goes left when `x <= num_threshold`; the raw score is the baseline plus each tree's leaf
value in tree order, and the probability is its logistic. Only what the re-ranker uses is
supported (binary classification, numeric features only); anything else is refused at export.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.special import expit

FORMAT = 1
# name -> dtype of every array in the file (all numeric: nothing needs pickle to load)
_ARRAYS = {"feature": np.int32, "threshold": np.float64, "missing_left": np.bool_, "left": np.int32,
           "right": np.int32, "is_leaf": np.bool_, "value": np.float64, "baseline": np.float64,
           "meta": np.int64}


class GradientBoostedTrees:
    """`predict_proba(X) -> [n, 2]` of a binary HistGradientBoostingClassifier, from arrays.

    Trees are padded to a common node count, so every per-node array is [n_trees, max_nodes];
    padding nodes are leaves of value 0 that no row ever reaches."""

    def __init__(self, feature, threshold, missing_left, left, right, is_leaf, value, baseline: float,
                 n_features: int):
        self.feature, self.threshold, self.missing_left = feature, threshold, missing_left
        self.left, self.right, self.is_leaf, self.value = left, right, is_leaf, value
        self.baseline, self.n_features = float(baseline), int(n_features)
        n_trees, n_nodes = feature.shape
        for name in ("threshold", "missing_left", "left", "right", "is_leaf", "value"):
            if getattr(self, name).shape != (n_trees, n_nodes):
                raise ValueError(f"tree array {name!r} has shape {getattr(self, name).shape}, "
                                 f"expected {(n_trees, n_nodes)}")
        # untrusted input must not index out of range or loop: sklearn numbers nodes in preorder,
        # so a child's index is always larger than its parent's (this also bounds the depth)
        inner = ~is_leaf
        parent = np.nonzero(inner)[1]
        if (np.any((left[inner] <= parent) | (left[inner] >= n_nodes) | (right[inner] <= parent)
                   | (right[inner] >= n_nodes))
                or np.any((feature[inner] < 0) | (feature[inner] >= self.n_features))):
            raise ValueError("tree arrays hold out-of-range or non-preorder child / feature indices")
        self.depth = _max_depth(left, right, is_leaf)
        # flat layout for prediction: node g = tree * n_nodes + node; children[2g] / children[2g + 1] are
        # g's left / right child, and a leaf is its own child, so rows that reached a leaf stay there
        offset = (np.arange(n_trees, dtype=np.int64) * n_nodes)[:, None]
        own = offset + np.arange(n_nodes)
        self._children = np.stack([np.where(is_leaf, own, offset + left),
                                   np.where(is_leaf, own, offset + right)], axis=-1).ravel()
        self._feature = np.where(is_leaf, 0, feature).ravel().astype(np.int64)
        self._threshold, self._missing_left = threshold.ravel(), missing_left.ravel()
        self._roots = offset.ravel()

    @classmethod
    def from_sklearn(cls, model) -> "GradientBoostedTrees":
        """Export a fitted binary HistGradientBoostingClassifier on numeric features."""
        if getattr(model, "n_trees_per_iteration_", None) != 1 or len(getattr(model, "classes_", ())) != 2:
            raise ValueError("only binary classifiers (one tree per iteration) can be exported")
        if getattr(model, "is_categorical_", None) is not None and np.any(model.is_categorical_):
            raise ValueError("categorical features are not supported by the array export")
        if getattr(model, "_preprocessor", None) is not None:
            raise ValueError("models with an input preprocessor (dataframe categories) are not supported")
        trees = [predictors[0].nodes for predictors in model._predictors]
        if any(t["is_categorical"].any() for t in trees):
            raise ValueError("categorical splits are not supported by the array export")
        n = max((len(t) for t in trees), default=1)
        arrays = {k: np.zeros((len(trees), n), dtype=_ARRAYS[k])
                  for k in ("feature", "threshold", "missing_left", "left", "right", "is_leaf", "value")}
        arrays["is_leaf"][:] = True  # padding
        for i, t in enumerate(trees):
            m = len(t)
            arrays["feature"][i, :m] = t["feature_idx"]
            arrays["threshold"][i, :m] = t["num_threshold"]
            arrays["missing_left"][i, :m] = t["missing_go_to_left"].astype(bool)
            arrays["left"][i, :m] = t["left"]
            arrays["right"][i, :m] = t["right"]
            arrays["is_leaf"][i, :m] = t["is_leaf"].astype(bool)
            arrays["value"][i, :m] = t["value"]
        baseline = np.asarray(model._baseline_prediction, dtype=np.float64).ravel()
        if baseline.shape != (1,):
            raise ValueError(f"unexpected baseline prediction of shape {baseline.shape}")
        return cls(**arrays, baseline=baseline[0], n_features=model.n_features_in_)

    # ---- prediction -------------------------------------------------------------------------
    def raw_predict(self, X: np.ndarray, chunk: int = 8192) -> np.ndarray:
        """Baseline + the sum of the reached leaf values, in tree order (as sklearn adds them)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X has shape {X.shape}, the trees expect {self.n_features} features")
        out = np.empty(len(X))
        for s in range(0, len(X), chunk):
            out[s:s + chunk] = self._raw_chunk(X[s:s + chunk])
        return out

    def _raw_chunk(self, X: np.ndarray) -> np.ndarray:
        n_trees, n_rows = len(self._roots), len(X)
        x_flat = np.ascontiguousarray(X).ravel()
        row_base = np.tile(np.arange(n_rows, dtype=np.int64) * X.shape[1], n_trees)  # [trees * rows]
        node = np.repeat(self._roots, n_rows)                                       # every row at every root
        for _ in range(self.depth):  # all rows of all trees move down one level
            x = x_flat.take(row_base + self._feature.take(node))
            # sklearn: NaN follows missing_go_to_left, any other value goes left when x <= threshold
            # (NaN <= t is False, so `| isnan & missing_left` adds exactly the NaN rule)
            go_right = ~((x <= self._threshold.take(node)) | (np.isnan(x) & self._missing_left.take(node)))
            new = self._children.take(2 * node + go_right)
            if np.array_equal(new, node):  # every row is at a leaf
                break
            node = new
        leaf_values = self.value.ravel().take(node).reshape(n_trees, n_rows)
        # baseline, then each tree's value in tree order (accumulate is sequential): sklearn's float sums
        return np.add.accumulate(np.vstack([np.full((1, n_rows), self.baseline), leaf_values]), axis=0)[-1]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """[n, 2]: P(classes_[0]), P(classes_[1]) -- same layout as the sklearn classifier."""
        p = expit(self.raw_predict(X))
        return np.stack([1 - p, p], axis=1)

    # ---- persistence ------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        np.savez(path, feature=self.feature, threshold=self.threshold, missing_left=self.missing_left,
                 left=self.left, right=self.right, is_leaf=self.is_leaf, value=self.value,
                 baseline=np.array([self.baseline]), meta=np.array([FORMAT, self.n_features]))

    @classmethod
    def load(cls, path: str | Path) -> "GradientBoostedTrees":
        with np.load(path, allow_pickle=False) as z:
            if set(z.files) != set(_ARRAYS):
                raise ValueError(f"{path} is not a tree file of this version (arrays {sorted(z.files)})")
            a = {k: z[k] for k in _ARRAYS}
        for k, dtype in _ARRAYS.items():
            if a[k].dtype != dtype:
                raise ValueError(f"{path}: array {k!r} has dtype {a[k].dtype}, expected {np.dtype(dtype)}")
        if int(a["meta"][0]) != FORMAT:
            raise ValueError(f"{path} holds trees of format {int(a['meta'][0])}, this version reads {FORMAT}")
        return cls(a["feature"], a["threshold"], a["missing_left"], a["left"], a["right"], a["is_leaf"],
                   a["value"], baseline=float(a["baseline"][0]), n_features=int(a["meta"][1]))


def _max_depth(left: np.ndarray, right: np.ndarray, is_leaf: np.ndarray) -> int:
    """Edges on the longest root-to-leaf path over all trees (children have larger indices)."""
    n_trees, n_nodes = left.shape
    depth = np.zeros((n_trees, n_nodes), dtype=np.int64)
    for j in range(n_nodes):  # parents come before children, so one forward pass suffices
        inner = ~is_leaf[:, j]
        t = np.nonzero(inner)[0]
        depth[t, left[t, j]] = depth[t, j] + 1
        depth[t, right[t, j]] = depth[t, j] + 1
    return int(depth.max()) if depth.size else 0
