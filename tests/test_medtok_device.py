"""Device consistency of MedTok training and tokenization, checked without a GPU.

Two complementary checks:
* an audit of every tensor factory call (torch.arange, zeros, randn, ...) made from medtok code
  while a real CPU training run and tokenization execute: each must name its device (the
  device of the data it meets, or "cpu" for data preparation). A call without one lands on
  whatever the default device is -- the class of bug that crashed every GPU run
  (`smallest_k`'s `torch.arange`, `restart_dead`'s `torch.randn`).
* the quantizer and a whole training step (forward and backward) run with the model and the
  batch on the meta device (no memory, no kernels): a CPU tensor meeting them raises as on CUDA.
Module construction is exempt (PyTorch's convention: parameters are created on the default
device and moved with `.to()`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

import medtok
from medtok.model import MedTokConfig, MedTokModel
from medtok.model.quantizer import RegionQuantizer, smallest_k
from medtok.tokenizer import MedTokTokenizer
from medtok.toy import toy_vocabulary
from medtok.train import MedTokTrainingModule, TrainConfig, make_batch, train

TINY = dict(text_dim=24, gnn_hidden=32, embed_dim=16, codebook_size=60, top_k=3, attn_heads=2, max_neighbors=6)
MEDTOK_DIR = str(Path(medtok.__file__).resolve().parent) + os.sep
TORCH_DIR = str(Path(torch.__file__).resolve().parent) + os.sep  # not torch_geometric
FACTORIES = {torch.arange, torch.zeros, torch.ones, torch.empty, torch.full, torch.randn, torch.rand,
             torch.randint, torch.randperm, torch.tensor, torch.as_tensor, torch.eye, torch.linspace}


class FactoryAudit(TorchFunctionMode):
    """Records tensor factory calls made from medtok code without a device."""

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES and kwargs.get("device") is None:
            f, constructing = sys._getframe(1), False
            while f is not None and f.f_code.co_filename.startswith(TORCH_DIR):
                constructing |= _constructs_module(f)
                f = f.f_back
            if f is not None and f.f_code.co_filename.startswith(MEDTOK_DIR) and not (constructing or _constructs_module(f)):
                where = f"{f.f_code.co_filename[len(MEDTOK_DIR):]}:{f.f_lineno}"
                self.calls.append(f"torch.{func.__name__} at medtok/{where}")
        return func(*args, **kwargs)


def _constructs_module(frame) -> bool:
    """A frame that builds a module's parameters (created on the default device, then moved by `.to()`)."""
    return frame.f_code.co_name in ("__init__", "reset_parameters") and isinstance(frame.f_locals.get("self"), nn.Module)


def _toy_features(vocab, dim=24, seed=0):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(len(vocab), dim)).astype(np.float32)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


@pytest.mark.parametrize("modalities", ["both", "text", "graph"])
def test_every_tensor_factory_in_training_and_tokenization_names_its_device(tmp_path, modalities):
    v, g = toy_vocabulary()
    emb = _toy_features(v)
    tc = TrainConfig(out_dir=str(tmp_path / "run"), steps=4, batch_size=16, save_every=2, restart_every=2,
                     restart_idle=1, heldout_fraction=0.1, device="cpu")
    # 64-entry regions so that the quantizer takes smallest_k's blocked path, as at full size
    mc = MedTokConfig(**{**TINY, "codebook_size": 192, "modalities": modalities})
    audit = FactoryAudit()
    with audit:
        train(tc, mc, vocab=v, graph=g, text_embeddings=emb, progress=False)
        tok = MedTokTokenizer.from_pretrained(tmp_path / "run", vocab=v, graph=g, text_embeddings=emb, device="cpu")
        tok.encode(["A00.1", "ICD9CM:100.2"])
        # a second tokenizer reads the token table back from disk (another code path)
        tok2 = MedTokTokenizer.from_pretrained(tmp_path / "run", vocab=v, graph=g, text_embeddings=emb)
        tok2.encode_all(progress=False)
    assert audit.calls == [], "tensors created without a device:\n" + "\n".join(sorted(set(audit.calls)))
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert sum(r["restarted"] for r in log) > 0  # the dead-entry restart path was audited too


# ---- model on the meta device ---------------------------------------------------------------
# FakeTensors that claim CUDA cannot run advanced indexing on a CPU-only build, so the forward
# paths run on the meta device instead: a CPU tensor meeting a meta tensor in an elementwise op
# raises, as it would on CUDA. (Restarts and usage marks need data-dependent shapes; the factory
# audit above covers them.)
META = torch.device("meta")


def test_meta_device_mixing_is_detected():
    x = torch.zeros(3, 4, device=META)
    with pytest.raises(RuntimeError, match="expected device meta"):
        x + torch.arange(4)


def test_smallest_k_and_quantizer_stay_on_the_input_device():
    vq = RegionQuantizer(3000, 16, {"text": (0, 1000), "graph": (1000, 2000), "shared": (2000, 3000)},
                         top_k=4).to(META)
    vals, idx = smallest_k(torch.randn(64, 1000, device=META), 4)  # the blocked path
    assert idx.device == META and vals.device == META
    x = torch.randn(64, 16, device=META)
    for with_distances in (True, False):
        out = vq(x, "graph", with_distances=with_distances)
        assert {t.device for t in (out.quantized, out.indices, out.weights, out.loss)} == {META}
    with torch.no_grad():
        out = vq(x, "text", with_distances=False)
    assert out.loss.device == META  # the inference placeholder too
    assert vq.get_output_from_indices(out.indices).device == META
    assert vq.get_output_from_indices(out.indices, out.weights).device == META


@pytest.mark.parametrize("modalities", ["both", "text"])
def test_training_step_forward_and_backward_on_meta(modalities):
    """One training step's forward (GNN, cross-attention, four quantizations, augmented views,
    all losses) and backward with the model and the batch on the meta device."""
    v, g = toy_vocabulary()
    # 64-entry regions: the quantizer takes smallest_k's blocked path, as at full size
    mc = MedTokConfig(**{**TINY, "codebook_size": 192, "modalities": modalities})
    tc = TrainConfig(batch_size=16)
    x = torch.from_numpy(_toy_features(v))
    inputs = make_batch(g, x, np.arange(len(v)), mc, tc, step=0)
    module = MedTokTrainingModule(MedTokModel(mc), tc).to(META)
    total, logs, q, emb = module(*[t.to(META) for t in inputs])
    assert total.device == META and all(t.device == META for t in logs.values())
    total.backward()
    assert module.model.quantizer.codebook.grad.device == META
