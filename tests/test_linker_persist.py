"""The linker's saved directories hold no pickle: TF-IDF vectorizers as data, trees as arrays.

Golden reference: scikit-learn itself (the fitted vectorizer's `transform`, the fitted
classifier's `predict_proba`)."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.feature_extraction.text import TfidfVectorizer

from qa.linker import CodeLinker
from qa.linker.index import INDEX_FORMAT, load_tfidf, save_tfidf
from qa.linker.rerank import FORMAT as RERANKER_FORMAT
from qa.linker.rerank import CodeReranker, word_analyzer
from qa.linker.trees import GradientBoostedTrees
from tests.test_linker import small_icd10cm

MENTIONS = ["pneumonia due to staph", "heart failure diastolic chronic", "asthma with exacerbation",
            "copd with acute lower resp infection", "type 2 diabetes kidney complication", "chest pain on breathing"]
TEXTS = ["Chronic diastolic heart failure", "pneumonia, unspecified organism", "Ünïcode  résumé x",
         "a", "", "type 2 diabetes mellitus with diabetic chronic kidney disease"]


class _Boom:
    """Unpickling this creates `path`: proof that a file was (or was not) unpickled."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def _same_sparse(a, b) -> bool:
    a, b = a.tocsr(), b.tocsr()
    return (a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a.indptr, b.indptr)
            and np.array_equal(a.indices, b.indices) and np.array_equal(a.data, b.data))


def _nan_data(rng, n, d):
    X = rng.normal(size=(n, d))
    X[rng.random(X.shape) < 0.15] = np.nan
    return X


@pytest.fixture(scope="module")
def vocab():
    return small_icd10cm()


# ---- trees ------------------------------------------------------------------------------
def test_tree_evaluator_matches_predict_proba_with_missing_values(tmp_path):
    rng = np.random.default_rng(0)
    X = _nan_data(rng, 3000, 6)
    X[:, 5] = rng.normal(size=len(X))  # one feature never missing in training: NaN at predict time still routes
    y = (np.nan_to_num(X[:, 0]) + X[:, 1] ** 2 - np.isnan(X[:, 2]) + 0.5 * rng.normal(size=len(X))) > 0.5
    model = HistGradientBoostingClassifier(max_iter=40, max_leaf_nodes=15, random_state=0).fit(X, y)
    trees = GradientBoostedTrees.from_sklearn(model)
    assert trees.feature.shape[0] == model.n_iter_ and trees.depth >= 3
    Xt = _nan_data(rng, 2000, 6)
    Xt[:7] = np.nan  # all-missing rows
    want = model.predict_proba(Xt)
    np.testing.assert_allclose(trees.predict_proba(Xt), want, rtol=0, atol=1e-6)
    # the file is numeric arrays only (loads with allow_pickle=False) and predicts the same
    trees.save(tmp_path / "t.npz")
    with np.load(tmp_path / "t.npz", allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)
    loaded = GradientBoostedTrees.load(tmp_path / "t.npz")
    assert np.array_equal(loaded.predict_proba(Xt), trees.predict_proba(Xt))
    with pytest.raises(ValueError, match="features"):
        trees.predict_proba(Xt[:, :5])


def test_tree_export_refuses_what_it_cannot_represent():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 3))
    multi = HistGradientBoostingClassifier(max_iter=3).fit(X, rng.integers(0, 3, len(X)))
    with pytest.raises(ValueError, match="binary"):
        GradientBoostedTrees.from_sklearn(multi)
    Xc = np.column_stack([rng.integers(0, 4, len(X)), X[:, 1]])
    cat = HistGradientBoostingClassifier(max_iter=3, categorical_features=[0]).fit(Xc, Xc[:, 0] >= 2)
    with pytest.raises(ValueError, match="categorical"):
        GradientBoostedTrees.from_sklearn(cat)


def test_tampered_tree_file_is_refused(tmp_path):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(400, 3))
    trees = GradientBoostedTrees.from_sklearn(HistGradientBoostingClassifier(max_iter=3).fit(X, X[:, 0] > 0))
    trees.save(tmp_path / "t.npz")
    with np.load(tmp_path / "t.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["left"][0, 0] = 0  # a root pointing at itself would loop forever
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match="child"):
        GradientBoostedTrees.load(tmp_path / "bad.npz")
    arrays["left"] = arrays["left"].astype(object)
    np.savez(tmp_path / "obj.npz", **arrays)  # an object array is a pickle inside the zip
    with pytest.raises(ValueError, match="pickle"):
        GradientBoostedTrees.load(tmp_path / "obj.npz")


# ---- vectorizers ------------------------------------------------------------------------
def test_tfidf_round_trip_transforms_bit_for_bit(vocab, tmp_path):
    docs = list(vocab.codes["description"])
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 3), min_df=1, dtype=np.float32).fit(docs)
    word = TfidfVectorizer(analyzer=word_analyzer, sublinear_tf=True, dtype=np.float32).fit(docs)
    save_tfidf(char, tmp_path, "char")
    save_tfidf(word, tmp_path, "word")
    assert json.loads((tmp_path / "word.json").read_text())["params"]["analyzer"] is None  # code is never stored
    char2, word2 = load_tfidf(tmp_path, "char"), load_tfidf(tmp_path, "word", analyzer=word_analyzer)
    assert word2.analyzer is word_analyzer and char2.vocabulary_ == char.vocabulary_
    for old, new in ((char, char2), (word, word2)):
        assert _same_sparse(old.transform(TEXTS + docs[:50]), new.transform(TEXTS + docs[:50]))
    with pytest.raises(ValueError, match="analyzer"):
        load_tfidf(tmp_path, "word")  # the caller must supply the function


# ---- whole directories ------------------------------------------------------------------
@pytest.fixture(scope="module")
def built(vocab, tmp_path_factory):
    """A small real-ICD-10-CM linker built (and its re-ranker fitted) in a fresh root."""
    linker = CodeLinker.build(vocab, root=tmp_path_factory.mktemp("persist"), verbose=False)
    return linker, linker.link_mentions(MENTIONS)


def test_saved_directories_hold_no_pickle_and_load_to_identical_rankings(built, tmp_path):
    linker, fitted = built
    directory = linker.directory
    files = [p for p in directory.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in (".joblib", ".pkl", ".pickle")]
    for p in files:
        if p.suffix in (".npy", ".npz"):
            np.load(p, allow_pickle=False)  # raises on any object array
    assert (directory / f"reranker_v{RERANKER_FORMAT}_{linker.config.rerank_queries}" / "trees.npz").exists()
    assert json.loads((directory / "build_info.json").read_text())["format"] == INDEX_FORMAT
    # the re-ranker scored with the exported trees right after fitting; a reload gives the same rankings
    assert any(len(links) > 1 for links in fitted)
    assert CodeLinker(directory, rerank=False).link_mentions(MENTIONS) != fitted  # the trees do change scores
    assert CodeLinker(directory).link_mentions(MENTIONS) == fitted
    # and so does a save_pretrained copy (index only: its re-ranker is fitted again, deterministically)
    copy = CodeLinker(linker.save_pretrained(tmp_path / "copy"))
    assert copy.link_mentions(MENTIONS) == fitted


def test_old_format_index_is_refused_without_unpickling(built, tmp_path):
    linker, _ = built
    old = tmp_path / "old"
    shutil.copytree(linker.directory, old)
    # what format 1 looked like: a joblib vectorizer and no format in build_info.json
    (old / "tfidf.json").unlink()
    (old / "tfidf_idf.npy").unlink()
    (old / "tfidf_vectorizer.joblib").write_bytes(pickle.dumps(_Boom(tmp_path / "unpickled")))
    info = json.loads((old / "build_info.json").read_text())
    del info["format"]
    (old / "build_info.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="format 1.*delete it to rebuild"):
        CodeLinker(old)
    assert not (tmp_path / "unpickled").exists()


def test_old_format_reranker_is_refused_or_refitted_without_unpickling(built, tmp_path):
    linker, fitted = built
    n = linker.config.rerank_queries
    d = tmp_path / "index"
    shutil.copytree(linker.directory, d, ignore=shutil.ignore_patterns("reranker_v*"))
    old = d / f"reranker_v2_{n}"  # format 2: reranker.json + a pickled {"vectorizer", "model"}
    old.mkdir()
    (old / "reranker.joblib").write_bytes(pickle.dumps(_Boom(tmp_path / "unpickled")))
    (old / "reranker.json").write_text(json.dumps({"format": 2, "features": [], "code_ids": []}))
    with pytest.raises(ValueError, match="delete it to refit"):
        CodeReranker.load(old)
    # the linker does not look at the old sub-directory: it fits a current one beside it
    assert CodeLinker(d).link_mentions(MENTIONS) == fitted
    assert (d / f"reranker_v{RERANKER_FORMAT}_{n}" / "trees.npz").exists()
    assert not (tmp_path / "unpickled").exists()
