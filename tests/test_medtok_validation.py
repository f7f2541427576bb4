"""Validation kappa during training and best-checkpoint selection (issue 21)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import medtok.train as T
from medtok.model import MedTokConfig
from medtok.model.features import node_features
from medtok.model.medtok import MedTokModel
from medtok.splits import heldout_mask
from medtok.toy import toy_vocabulary
from medtok.train import TrainConfig, latest_checkpoint, train
from medtok.validation import ValidationSet, Validator, eligible_mask, validation_mask
from qa.datasets.ontology import code_split

TINY = dict(text_dim=24, gnn_hidden=32, embed_dim=16, codebook_size=60, top_k=3, attn_heads=2, max_neighbors=6)
RUN = dict(steps=8, batch_size=16, save_every=2, restart_every=3, restart_idle=2, heldout_fraction=0.1, device="cpu",
           val_every=2, val_fraction=0.3, val_pairs=200)


@pytest.fixture(scope="module")
def toy():
    v, g = toy_vocabulary()
    return v, g, np.random.default_rng(0).normal(size=(len(v), 24)).astype(np.float32)


def qa_test_codes(vocab, split_seeds=(0, 1, 2)) -> list[str]:
    """The union of the QA test splits (ontology, relational and KG share `code_split`) over seeds."""
    return sorted({c for s in split_seeds for c in vocab.codes["code_id"] if code_split(c, split_seed=s) == "test"})


def test_the_validation_split_is_disjoint_from_heldout_and_qa_test_codes(toy):
    v, g, _ = toy
    test = qa_test_codes(v)
    assert 0 < len(test) < len(v)
    val = validation_mask(v, 0.1, ["ICD10CM:A00.1"], test, fraction=0.5)
    held = heldout_mask(v.codes["code_id"], v.codes["kind"], 0.1, ["ICD10CM:A00.1"])
    ids = v.codes["code_id"].to_numpy()
    assert val.sum() > 10
    assert not (val & held).any()
    assert not set(ids[val]) & set(test)
    assert (v.codes["kind"].to_numpy()[val] == "code").all()
    # the fixed pairs: a validation code first, no pair touches a held-out or test code
    elig = eligible_mask(v, 0.1, ["ICD10CM:A00.1"], test)
    vs = ValidationSet.build(v, g, val, elig, n_pairs=100)
    assert len(vs.siblings) and len(vs.gem)
    for rel, rnd in ((vs.siblings, vs.siblings_random), (vs.gem, vs.gem_random)):
        assert val[rel[:, 0]].all() and elig[rel].all() and val[rnd[:, 0]].all() and elig[rnd].all()
        assert not held[np.concatenate([rel.ravel(), rnd.ravel()])].any()
    # the same sample every time (a fixed seed), and another with another seed
    again = ValidationSet.build(v, g, val, elig, n_pairs=100)
    assert np.array_equal(again.siblings, vs.siblings) and np.array_equal(again.gem_random, vs.gem_random)


def test_validation_codes_leave_training_only_when_asked(toy):
    v, g, _ = toy
    tc = TrainConfig(**RUN)
    rows = T.training_rows(v, tc)
    val = validation_mask(v, tc.heldout_fraction, None, None, tc.val_fraction)
    assert val[rows].any()  # default: still centres (the trajectory is the run without validation)


def test_the_saved_tokenizer_is_the_best_validation_checkpoint(tmp_path, toy):
    v, g, emb = toy
    scores = iter([0.1, 0.5, 0.2, 0.3])
    seen = {}

    def evaluator(model):  # a stand-in score; records the weights it saw at each evaluation
        m = next(scores)
        seen[m] = {k: t.detach().clone() for k, t in model.state_dict().items()}
        return {"metric": m, "kappa_siblings": m, "kappa_gem": None}

    out = train(TrainConfig(out_dir=str(tmp_path / "sel"), **RUN), MedTokConfig(**TINY), vocab=v, graph=g,
                text_embeddings=emb, progress=False, evaluator=evaluator)
    m = json.loads((out / "metrics.json").read_text())["validation"]
    assert [r["step"] for r in m["curve"]] == [2, 4, 6, 8] and m["best_step"] == 4 and m["selected_step"] == 4
    best, last = load_file(out / "model.safetensors"), load_file(out / "last_model.safetensors")
    assert all(torch.equal(best[k], seen[0.5][k]) for k in best)
    assert all(torch.equal(last[k], seen[0.3][k]) for k in last)
    # the last weights are the run without validation (same trajectory), the plot exists
    plain = train(TrainConfig(out_dir=str(tmp_path / "plain"), **dict(RUN, val_every=0)), MedTokConfig(**TINY),
                  vocab=v, graph=g, text_embeddings=emb, progress=False)
    ref = load_file(plain / "model.safetensors")
    assert all(torch.equal(last[k], ref[k]) for k in ref)
    assert (out / "validation_curve.png").exists()
    # the tokenizer loads the selected (best) weights
    assert all(torch.equal(MedTokModel.from_pretrained(out).state_dict()[k], best[k]) for k in best)


def test_the_default_validator_scores_the_saved_best(tmp_path, toy):
    v, g, emb = toy
    out = train(TrainConfig(out_dir=str(tmp_path / "run"), **RUN), MedTokConfig(**TINY), vocab=v, graph=g,
                text_embeddings=emb, progress=False)
    m = json.loads((out / "metrics.json").read_text())["validation"]
    assert len(m["curve"]) == 4 and m["best_metric"] == max(r["metric"] for r in m["curve"])
    assert all(r["pairs"]["siblings"] > 0 for r in m["curve"])
    tc = TrainConfig(**RUN)
    mc = MedTokConfig(**TINY)
    val = validation_mask(v, tc.heldout_fraction, None, None, tc.val_fraction)
    vs = ValidationSet.build(v, g, val, eligible_mask(v, tc.heldout_fraction, None, None), tc.val_pairs, tc.seed)
    x = node_features(v, g, mc, emb)
    r = Validator(vs, x, g, mc.max_neighbors)(MedTokModel.from_pretrained(out))
    assert r["metric"] == pytest.approx(m["best_metric"], abs=1e-12)


def test_resume_restores_the_best_so_far_and_the_curve(tmp_path, toy, monkeypatch):
    v, g, emb = toy
    ref = train(TrainConfig(out_dir=str(tmp_path / "ref"), **RUN), MedTokConfig(**TINY), vocab=v, graph=g,
                text_embeddings=emb, progress=False)

    real = T.make_batch

    def dies_at_step_5(*a, **k):
        if a[5] == 5:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(T, "make_batch", dies_at_step_5)
    killed = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(out_dir=str(killed), **RUN), MedTokConfig(**TINY), vocab=v, graph=g, text_embeddings=emb,
              progress=False)
    assert latest_checkpoint(killed).name == "checkpoint-4"
    monkeypatch.setattr(T, "make_batch", real)
    train(TrainConfig(out_dir=str(killed), **RUN), resume_from="latest", vocab=v, graph=g, text_embeddings=emb,
          progress=False)
    a = json.loads((ref / "metrics.json").read_text())["validation"]
    b = json.loads((killed / "metrics.json").read_text())["validation"]
    assert a["curve"] == b["curve"] and a["best_step"] == b["best_step"]
    for name in ("model.safetensors", "last_model.safetensors", "best_model.safetensors"):
        x, y = load_file(ref / name), load_file(killed / name)
        assert all(torch.equal(x[k], y[k]) for k in x), name
