"""Description-retrieval probe: known answers on synthetic features, the ridge against
scikit-learn, ranks by hand, and the tokenizer path on the toy vocabulary with a tiny MedTok."""

import numpy as np
import pytest
import torch

from medtok.model import MedTokConfig, MedTokModel
from medtok.model.features import node_features
from medtok.probe import (ProbeConfig, description_retrieval, fit_ridge, probe_checkpoint, probe_tokenizer,
                          retrieval_accuracy)
from medtok.tokenizer import MedTokTokenizer
from medtok.toy import toy_vocabulary

TINY = dict(text_dim=24, gnn_hidden=32, embed_dim=16, codebook_size=60, top_k=3, attn_heads=2, max_neighbors=6)


def _unit(a):
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_retrieval_ranks_by_hand():
    target = np.eye(3)
    pred = np.array([[1.0, 0.1, 0.0],    # nearest its own target: rank 1
                     [1.0, 0.5, 0.0],    # target 0 scores higher than its own (1): rank 2
                     [0.0, 1.0, 0.2]])   # targets 1 above own (2): rank 2
    r = retrieval_accuracy(pred, target, n_candidates=3, ks=(1, 2))
    assert r["acc@1"] == pytest.approx(1 / 3) and r["acc@2"] == 1.0
    assert r["mean_rank"] == pytest.approx(5 / 3) and r["n_candidates"] == 3 and r["pools"] == 1
    # pools: 10 rows, 4 candidates each -> 2 pools, 2 rows dropped
    r = retrieval_accuracy(np.eye(10), np.eye(10), n_candidates=4)
    assert r["pools"] == 2 and r["n_queries"] == 8 and r["acc@1"] == 1.0 and r["chance_at_1"] == 0.25


def test_ridge_matches_scikit_learn():
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)) * np.array([1, 10, 0.1, 1, 5, 2])
    y = x @ rng.normal(size=(6, 3)) + rng.normal(size=(200, 3))
    m = fit_ridge(x, y, alpha=3.0)
    z = (x - x.mean(0)) / x.std(0)
    ref = Ridge(alpha=3.0).fit(z, y)
    assert np.allclose(m.w, ref.coef_.T, atol=1e-8)
    assert np.allclose(m(x[:5]), ref.predict(z[:5]), atol=1e-8)


def test_linear_vectors_retrieve_perfectly_and_random_ones_at_chance():
    rng = np.random.default_rng(1)
    text = _unit(rng.normal(size=(1200, 16)))
    train, test = np.arange(800), np.arange(800, 1200)
    cfg = ProbeConfig(n_candidates=200, alpha=1e-3)
    linear = text @ rng.normal(size=(16, 40))  # vectors a linear map of the text features
    r = description_retrieval(linear, text, train, test, cfg)
    assert r["acc@1"] == 1.0 and r["train_acc@1"] == 1.0 and r["n_queries"] == 400 and r["pools"] == 2
    noise = rng.normal(size=(1200, 40))  # vectors that carry nothing about the text
    r = description_retrieval(noise, text, train, test, cfg)
    assert r["chance_at_1"] == 1 / 200 and r["acc@1"] < 0.03  # chance 0.005; 400 queries
    assert r["train_acc@1"] > r["acc@1"]  # the ridge fits noise where it was fitted, not elsewhere
    # [n, groups, d] vectors are flattened; max_train samples the training rows
    r = description_retrieval(linear.reshape(1200, 4, 10), text, train, test, ProbeConfig(n_candidates=200, max_train=100))
    assert r["train_codes"] == 100 and r["feature_dim"] == 40 and r["acc@1"] > 0.9


@pytest.fixture(scope="module")
def toy_tokenizer():
    v, g = toy_vocabulary()
    rng = np.random.default_rng(0)
    emb = _unit(rng.normal(size=(len(v), 24))).astype(np.float32)
    torch.manual_seed(0)
    cfg = MedTokConfig(**TINY)
    model = MedTokModel(cfg)  # untrained: a random MedTok
    return MedTokTokenizer(model, v, g, node_features(v, g, cfg, emb), heldout_fraction=0.2), emb


def test_probe_tokenizer_on_toy_vocabulary(toy_tokenizer):
    tok, emb = toy_tokenizer
    systems = ("ICD10CM", "ICD9CM")
    r = probe_tokenizer(tok, ProbeConfig(n_candidates=30, systems=systems))
    n_codes = int(((tok.vocab.codes["kind"] == "code") & tok.vocab.codes["system"].isin(systems)).sum())
    assert r["train_codes"] + r["test_codes"] == n_codes == 384 and r["test_codes"] > 30
    assert r["feature_dim"] == 4 * 16 and 0 <= r["acc@1"] <= r["acc@5"] <= 1
    # targets that are a linear function of the tokenizer's own vectors: the probe finds them all
    rows = np.flatnonzero((tok.vocab.codes["kind"] == "code").to_numpy())
    vec = tok.encode_rows(rows).vectors.reshape(len(rows), -1).numpy()
    target = np.zeros((len(tok.vocab), 8))
    target[rows] = vec @ np.random.default_rng(2).normal(size=(vec.shape[1], 8))
    r = probe_tokenizer(tok, ProbeConfig(n_candidates=30, systems=systems, alpha=1e-6), text_embeddings=target)
    assert r["acc@1"] == 1.0
    # an explicit held-out list replaces the checkpoint's own
    held = list(tok.vocab.codes["code_id"][rows[:50]])
    r = probe_tokenizer(tok, ProbeConfig(n_candidates=30, systems=systems), heldout_codes=held)
    assert r["test_codes"] == 50 and r["pools"] == 1


def test_probe_checkpoint_and_untrained_baseline(toy_tokenizer, tmp_path):
    tok, emb = toy_tokenizer
    tok.save_pretrained(tmp_path)
    cfg = ProbeConfig(n_candidates=30, systems=("ICD10CM", "ICD9CM"), seed=3)
    direct = probe_tokenizer(tok, cfg)
    loaded = probe_checkpoint(tmp_path, cfg, vocab=tok.vocab, graph=tok.graph, text_embeddings=emb, progress=False)
    assert loaded["acc@1"] == direct["acc@1"] and loaded["untrained"] is False
    # the baseline: a fresh model of the same configuration, seeded by config.seed
    base = probe_checkpoint(tmp_path, cfg, vocab=tok.vocab, graph=tok.graph, text_embeddings=emb, progress=False,
                            untrained=True)
    torch.manual_seed(3)
    fresh = MedTokTokenizer(MedTokModel(tok.model.config), tok.vocab, tok.graph, tok.x, heldout_fraction=0.2)
    assert base["untrained"] is True and base["acc@1"] == probe_tokenizer(fresh, cfg)["acc@1"]
