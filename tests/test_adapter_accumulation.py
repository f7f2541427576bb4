"""Exact gradient accumulation in `llm_adapter.train_loop.train_stage`.

Answers of unequal length (1..6 tokens) and no dropout: one optimizer step with batch 2 x
accumulation 4 equals batch 8 x 1, and 2 real processes (gloo) x batch 4 x accumulation 2
equal 1 process x batch 16 -- the same loss, the same gradient norm and the same updated
weights. The reference gradient is Hugging Face's own causal-LM loss over the whole batch in
one forward (the mean over all answer tokens), and the test checks that this differs from
the mean of per-micro-batch means, so equal lengths could not make it pass by accident."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from llm_adapter.config import AdapterConfig, LoraSettings, ProjectorConfig
from llm_adapter.train_loop import data_order, micro_batch, train_stage
from llm_adapter.finetune_config import StageConfig
from llm_adapter.model import PrefixLM
from llm_adapter.vectors import RandomVectors
from tests.conftest import tiny_llama

H = 32
# Weights after AdamW steps of size lr = 5e-3..1e-2: Adam divides each gradient element by its
# magnitude (+ eps 1e-8), so elements with |g| near eps turn float rounding of the gradient
# (~1e-7 relative, batches padded differently) into ~1e-6 of weight. 2e-5 is 0.4% of one step;
# a wrong accumulation (4 steps instead of 1, or another weighting of the examples) moves
# weights by whole steps. The gradient itself is compared at rel 1e-5 (grad_norm).
ATOL = 2e-5


def _examples(n: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        codes = [f"C{i % 5}"] if i % 3 else []  # some questions without a code (no prefix)
        prompt = rng.integers(4, 60, size=int(rng.integers(3, 9))).tolist()
        answer = rng.integers(4, 60, size=int(rng.integers(1, 7))).tolist()
        out.append((codes, prompt, answer))
    return out


def _model(seed: int = 0) -> PrefixLM:
    cfg = AdapterConfig(base_model="tiny", hidden_size=H, vector_source="random", max_codes=1,
                        projector=ProjectorConfig(input_dim=8, num_groups=4, hidden_size=H, tokens_per_code=2,
                                                  mlp_hidden=16),
                        lora=LoraSettings(r=4, alpha=8, dropout=0.0, target_modules=("q_proj", "v_proj")))
    m = PrefixLM.build(cfg, lm=tiny_llama(vocab_size=64, hidden_size=H, num_layers=2, seed=seed),
                       vector_source=RandomVectors(4, 8, seed=1), seed=seed)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # LoRA B starts at 0, which would leave A without gradient
        for n, p in m.lm.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return m


def _accelerator():
    from accelerate import Accelerator

    return Accelerator(cpu=True)


def _train(model, batch_size, grad_accum, steps=1, accelerator=None):
    stage = StageConfig(steps=steps, batch_size=batch_size, grad_accum=grad_accum, lr=1e-2, warmup=2)
    return train_stage(model, _examples(), stage, accelerator=accelerator or _accelerator(), lora=True,
                       projector=True, name="qa", seed=5, progress=False)


def _adapter(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n or n.startswith("projector.")}


def test_micro_batches_of_a_step_cover_the_same_examples():
    order = data_order(32, steps=2, per_step=16, seed=5)
    for step in range(2):
        whole = order[step * 16:(step + 1) * 16].tolist()
        split = [i for m in range(2) for r in range(2) for i in micro_batch(order, step, m, r, 4, 2, 2).tolist()]
        assert sorted(split) == sorted(whole)
        assert micro_batch(order, step, 0, 0, 16, 1, 1).tolist() == whole


def test_accumulation_equals_one_big_batch():
    examples = _examples()
    order = data_order(len(examples), 1, 8, seed=5)
    batch = [examples[i] for i in order[:8]]
    assert len({len(a) for _, _, a in batch}) > 2  # answers of unequal length

    # reference: HF's loss over the 8 examples in one forward = mean over all their answer tokens
    ref = _model()
    params = ref.trainable_parameters()
    inputs = ref.inputs(*[list(x) for x in zip(*batch)])
    labels = inputs.pop("labels")
    ref.lm(**inputs, labels=labels).loss.backward()
    ref_norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])))
    # what the old loop optimised with accumulation 4: the mean of the 4 micro-batch means
    naive = _model()
    params_n = naive.trainable_parameters()
    for k in range(4):
        naive.loss(*[list(x) for x in zip(*batch[2 * k:2 * k + 2])]).div(4).backward()
    naive_norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params_n])))
    assert abs(naive_norm - ref_norm) > 1e-3 * ref_norm

    big, small = _model(), _model()
    start = _adapter(big)
    c_big = _train(big, batch_size=8, grad_accum=1)
    c_small = _train(small, batch_size=2, grad_accum=4)
    assert c_big[0]["grad_norm"] == pytest.approx(ref_norm, rel=1e-5)
    assert c_small[0]["grad_norm"] == pytest.approx(ref_norm, rel=1e-5)
    assert c_small[0]["loss"] == pytest.approx(c_big[0]["loss"], rel=1e-6)
    assert c_small[0]["tokens"] == c_big[0]["tokens"] == sum(len(p) + len(a) for _, p, a in batch)
    w_big, w_small = _adapter(big), _adapter(small)
    assert any(not torch.equal(start[n], w_big[n]) for n in start)  # one optimizer step was taken
    for n in w_big:  # (ATOL: see below)
        torch.testing.assert_close(w_small[n], w_big[n], rtol=0, atol=ATOL)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    acc = _accelerator()
    assert acc.num_processes == world and acc.process_index == rank
    model = _model()
    curve = _train(model, batch_size=4, grad_accum=2, steps=2, accelerator=acc)
    if rank == 0:
        torch.save({"curve": [(c["loss"], c["grad_norm"], c["tokens"]) for c in curve], "adapter": _adapter(model)},
                   out)
    acc.wait_for_everyone()
    torch.distributed.destroy_process_group()


def test_two_processes_equal_one_process(tmp_path):
    """2 processes (gloo) x batch 4 x accumulation 2 == 1 process x batch 16, over two steps
    (the second with another warm-up learning rate)."""
    out = tmp_path / "ddp.pt"
    mp.start_processes(_worker, args=(2, _free_port(), str(out)), nprocs=2, start_method="spawn", join=True)
    ddp = torch.load(out, weights_only=True)
    single = _model()
    curve = _train(single, batch_size=16, grad_accum=1, steps=2)
    for (loss, gnorm, tokens), c in zip(ddp["curve"], curve):
        assert loss == pytest.approx(c["loss"], rel=1e-6)
        assert gnorm == pytest.approx(c["grad_norm"], rel=1e-5)
        assert tokens == c["tokens"]
    w = _adapter(single)
    assert set(w) == set(ddp["adapter"])
    for n in w:
        torch.testing.assert_close(ddp["adapter"][n], w[n], rtol=0, atol=ATOL)
