"""Kill-and-resume of the fine-tuning job with real processes.

A tiny job (both arms, caption alignment + QA stages, checkpoints every 2 steps) runs three
times in fresh Python processes, each with another PYTHONHASHSEED:
  1. uninterrupted (the reference);
  2. killed with SIGKILL in the middle of writing its 4th checkpoint (after the adapter file
     went to disk, before the optimizer state: the worst moment for a non-atomic writer), in
     the prefix arm's alignment stage, with the no-prefix arm already finished;
  3. restarted in the same directory: it reuses the finished arm, resumes the alignment stage
     from its last whole checkpoint (step 2 of 3), and runs to the end.
The final adapter weights of both arms, the training curves and every prediction equal the
reference bitwise (CPU, one thread). The differing hash seeds also show that nothing in the
job depends on Python's string hashing (set/dict order)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.conftest import PROJECT_ROOT

RUNNER = r"""
import os, signal, sys
import llm_adapter.checkpoint as ckpt
from llm_adapter.config import AdapterConfig, LoraSettings, ProjectorConfig
from llm_adapter.finetune import finetune
from llm_adapter.finetune_config import FinetuneConfig, StageConfig
from tests.conftest import char_tokenizer, tiny_llama, toy_questions

kill_at = int(os.environ.get("KILL_AT_SAVE", "0"))
if kill_at:
    real_save_file, calls = ckpt.save_file, []

    def save_file_then_die(tensors, path):
        real_save_file(tensors, path)
        calls.append(path)
        if len(calls) == kill_at:  # the adapter file is in the temporary directory, nothing else yet
            os.kill(os.getpid(), signal.SIGKILL)

    ckpt.save_file = save_file_then_die

adapter = AdapterConfig(base_model="tiny", hidden_size=32, max_codes=1,
                        projector=ProjectorConfig(hidden_size=32, tokens_per_code=2, mlp_hidden=32),
                        lora=LoraSettings(r=2, alpha=4, dropout=0.1, target_modules=("q_proj", "v_proj")))
cfg = FinetuneConfig(output_dir=sys.argv[1], vector_source="random", adapter=adapter,
                     align=StageConfig(steps=3, batch_size=4, lr=1e-3, warmup=0), align_codes=16,
                     qa=StageConfig(steps=4, batch_size=2, grad_accum=2, lr=1e-3, warmup=1), train_eval_size=4,
                     eval_every=2, eval_batch_size=8, checkpoint_every=2, progress=False, bf16_autocast=False,
                     threads=1)
finetune(cfg, lm=tiny_llama(vocab_size=256, hidden_size=32, num_layers=2, seed=0), tokenizer=char_tokenizer(),
         questions=toy_questions())
"""


def _start(out: Path, hash_seed: int, kill_at_save: int = 0) -> subprocess.Popen:
    env = {**os.environ, "PYTHONHASHSEED": str(hash_seed), "OMP_NUM_THREADS": "1",
           "KILL_AT_SAVE": str(kill_at_save), "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.Popen([sys.executable, "-c", RUNNER, str(out)], cwd=PROJECT_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(p: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = p.communicate(timeout=300)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def _final(run: Path) -> tuple[dict, dict]:
    weights = {}
    for arm in ("lora", "lora_prefix"):
        for f in ("adapter_model.safetensors", "projector.safetensors"):
            if (run / arm / f).exists():
                weights.update({f"{arm}/{f}/{k}": v for k, v in load_file(str(run / arm / f)).items()})
    res = json.loads((run / "results.json").read_text())
    record = {arm: {"scores": r["scores"], "train_acc_start": r["train_acc_start"],
                    "curves": {s: [{k: v for k, v in c.items() if k != "elapsed_s"} for c in curve]
                               for s, curve in r["curves"].items()}}
              for arm, r in res["arms"].items()}
    return weights, record


def test_sigkill_mid_checkpoint_then_resume_matches_uninterrupted_run(tmp_path):
    run = tmp_path / "run"
    ref, killed = _start(tmp_path / "ref", hash_seed=1), _start(run, hash_seed=2, kill_at_save=4)  # side by side
    ref, killed = _wait(ref), _wait(killed)
    assert ref.returncode == 0, ref.stderr[-3000:]
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    ckpts = run / "lora_prefix" / "checkpoints"
    # killed while writing align-step-3: only a hidden temporary directory holds part of it
    assert not (ckpts / "align-step-3").exists() and (ckpts / "align-step-2" / "progress.json").exists()
    partial = list(ckpts.glob(".align-step-3.tmp-*"))
    assert len(partial) == 1 and [p.name for p in partial[0].iterdir()] == ["adapter.safetensors"]
    assert (run / "lora" / "arm_result.json").exists() and not (run / "results.json").exists()

    resumed = _wait(_start(run, hash_seed=3))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "lora: finished in an earlier run" in resumed.stdout
    assert "align: resumed from" in resumed.stderr + resumed.stdout
    w_ref, r_ref = _final(tmp_path / "ref")
    w_run, r_run = _final(run)
    assert set(w_ref) == set(w_run) and len(w_ref) > 4
    assert [k for k in w_ref if not torch.equal(w_ref[k], w_run[k])] == []
    assert r_run == r_ref
