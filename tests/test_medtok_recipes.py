"""The training job's flags and presets (medtok.train_cli) and the MedTok configs' JSON rules."""

from __future__ import annotations

import argparse
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from medbase.jsonconfig import UnknownConfigKeys
from medtok.checkpoint import write_manifest
from medtok.model import MedTokConfig, MedTokModel
from medtok.tokenizer import MedTokTokenizer, TokenizerConfig
from medtok.toy import toy_vocabulary
from medtok.train import CHECKPOINT_FILES, TrainConfig, train
from medtok.train_cli import PAPER_PRESET, add_training_arguments, training_configs

TINY = dict(text_dim=24, gnn_hidden=32, embed_dim=16, codebook_size=60, top_k=3, attn_heads=2, max_neighbors=6)


def parse(*argv):
    return add_training_arguments(argparse.ArgumentParser()).parse_args(list(argv))


# ---- the paper preset: the batch of 1024 is global -------------------------------------------
def test_paper_preset_batch_is_global():
    tcfg, mcfg = training_configs({}, {}, paper=True)
    assert tcfg.global_batch_size == 1024 and tcfg.steps == 3000
    assert mcfg.codebook_size == 12000 and mcfg.embed_dim == 64
    # the paper trained on 4 GPUs: 256 codes per GPU and step; one device takes all 1024
    assert [tcfg.per_process_batch(w) for w in (1, 2, 4, 8)] == [1024, 512, 256, 128]
    with pytest.raises(ValueError, match="global_batch_size"):
        tcfg.per_process_batch(3)  # 1024 does not split over 3 processes


def test_explicit_batch_size_replaces_the_preset_global_batch():
    tcfg, _ = training_configs({"batch_size": 64}, {}, paper=True)
    assert tcfg.global_batch_size is None and tcfg.per_process_batch(4) == 64
    tcfg, _ = training_configs({"global_batch_size": 96}, {"codebook_size": 300}, paper=True)
    assert tcfg.per_process_batch(2) == 48


def test_flags_cover_both_configs():
    a = parse("--paper", "--steps", "7", "--device", "cpu", "--codebook-size", "300", "--l2-norm", "false",
              "--text-encoder", "/models/x", "--region-fractions", "0.5", "0.25", "0.25", "--systems", "ICD10CM")
    tkw = {k[2:]: v for k, v in vars(a).items() if k.startswith("t_") and v is not None}
    mkw = {k[2:]: v for k, v in vars(a).items() if k.startswith("m_") and v is not None}
    mkw["region_fractions"] = tuple(a.region_fractions)
    tcfg, mcfg = training_configs(tkw, mkw, paper=a.paper, systems=a.systems)
    assert (tcfg.steps, tcfg.device, tcfg.global_batch_size, tcfg.systems) == (7, "cpu", 1024, ["ICD10CM"])
    assert (mcfg.codebook_size, mcfg.l2_norm, mcfg.text_encoder, mcfg.embed_dim) == (300, False, "/models/x", 64)
    assert mcfg.region_fractions == (0.5, 0.25, 0.25)
    assert parse("--global-batch-size", "64").t_global_batch_size == 64


def test_global_batch_on_one_process_equals_the_same_per_process_batch(tmp_path):
    v, g = toy_vocabulary()
    emb = np.random.default_rng(0).normal(size=(len(v), 24)).astype(np.float32)
    common = dict(steps=3, save_every=100, heldout_fraction=0.1, device="cpu")
    a = train(TrainConfig(out_dir=str(tmp_path / "a"), batch_size=16, **common), MedTokConfig(**TINY), vocab=v,
              graph=g, text_embeddings=emb, progress=False)
    b = train(TrainConfig(out_dir=str(tmp_path / "b"), global_batch_size=16, **common), MedTokConfig(**TINY),
              vocab=v, graph=g, text_embeddings=emb, progress=False)
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert TrainConfig.load_saved(b / "train_config.json").global_batch_size == 16


def test_resume_takes_the_saved_settings(tmp_path):
    v, g = toy_vocabulary()
    emb = np.random.default_rng(0).normal(size=(len(v), 24)).astype(np.float32)
    out = tmp_path / "run"
    train(TrainConfig(out_dir=str(out), steps=4, batch_size=16, save_every=2, lr=1e-3, device="cpu"),
          MedTokConfig(**TINY), vocab=v, graph=g, text_embeddings=emb, progress=False)
    tcfg, mcfg = training_configs({"steps": 6}, {}, resume=str(out / "checkpoint-2"), out_dir=str(out))
    assert mcfg is None  # the model config comes from the checkpoint
    assert (tcfg.steps, tcfg.lr, tcfg.batch_size, tcfg.save_every) == (6, 1e-3, 16, 2)
    assert tcfg.device == "auto"  # the saved "cpu" is where it ran, not a setting to carry over
    fresh, m = training_configs({}, {"codebook_size": 90}, resume="latest", out_dir=str(tmp_path / "empty"))
    assert m.codebook_size == 90  # nothing to resume: a fresh run keeps its model flags


# ---- JSON configs: strict for users, tolerant for checkpoints ---------------------------------
def test_user_configs_reject_unknown_keys(tmp_path):
    with pytest.raises(UnknownConfigKeys, match="stpes"):
        TrainConfig.from_dict({"stpes": 3})
    (tmp_path / "m.json").write_text(json.dumps({"codebook_size": 300, "codebok_size": 3}))
    with pytest.raises(UnknownConfigKeys, match="codebok_size"):
        MedTokConfig.load(tmp_path / "m.json")
    with pytest.raises(UnknownConfigKeys):
        TokenizerConfig.from_dict({"vocab": "x"})
    with pytest.raises(ValueError, match="device"):
        TrainConfig(device="gpu")
    c = MedTokConfig(codebook_size=300, region_fractions=[0.5, 0.25, 0.25])
    assert MedTokConfig.from_dict(json.loads(c.to_json())) == c  # JSON round trip, tuple restored


def test_checkpoint_from_a_newer_version_loads_with_a_warning(tmp_path):
    v, g = toy_vocabulary()
    emb = np.random.default_rng(0).normal(size=(len(v), 24)).astype(np.float32)
    out = tmp_path / "run"
    train(TrainConfig(out_dir=str(out), steps=2, batch_size=16, save_every=100, device="cpu"), MedTokConfig(**TINY),
          vocab=v, graph=g, text_embeddings=emb, progress=False)
    newer = tmp_path / "newer"
    shutil.copytree(out, newer)
    for name, key in (("config.json", "rotary_codebook"), ("train_config.json", "ema_decay")):
        d = json.loads((newer / name).read_text())
        d[key] = 0.5
        (newer / name).write_text(json.dumps(d))
    write_manifest(newer, list(CHECKPOINT_FILES))  # the newer version's own manifest
    with pytest.warns(UserWarning, match="rotary_codebook"):
        model = MedTokModel.from_pretrained(newer)
    assert model.config.codebook_size == 60
    with pytest.warns(UserWarning, match="ema_decay"):
        assert TrainConfig.load_saved(newer / "train_config.json").steps == 2
    with pytest.warns(UserWarning, match="rotary_codebook"):
        tok = MedTokTokenizer.from_pretrained(newer, vocab=v, graph=g, text_embeddings=emb)
    assert tok.encode(["A00.1"]).ids.shape == (1, 4, 3)
