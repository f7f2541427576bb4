"""Kill-and-resume: a MedTok training process killed with SIGKILL mid-run and restarted from its
last checkpoint ends with bitwise the same weights and the same log as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from medbase.paths import PROJECT_ROOT
from medtok.model import MedTokConfig
from medtok.toy import toy_vocabulary
from medtok.train import TrainConfig, latest_checkpoint, train

TINY = dict(text_dim=24, gnn_hidden=32, embed_dim=16, codebook_size=60, top_k=3, attn_heads=2, max_neighbors=6)
RUN = dict(steps=40, batch_size=16, save_every=5, restart_every=3, restart_idle=2, heldout_fraction=0.1, device="cpu")

# The child trains on the toy vocabulary with random text features; `delay` slows each step so
# the parent can kill it between two checkpoints (it changes no number).
CHILD = """
import sys, time
import numpy as np, torch
torch.set_num_threads({threads})
import medtok.train as T
from medtok.model import MedTokConfig
from medtok.toy import toy_vocabulary
delay = {delay}
if delay:
    make_batch = T.make_batch
    T.make_batch = lambda *a, **k: (time.sleep(delay), make_batch(*a, **k))[1]
v, g = toy_vocabulary()
emb = np.random.default_rng(0).normal(size=(len(v), 24)).astype(np.float32)
T.train(T.TrainConfig(out_dir={out!r}, **{run!r}), MedTokConfig(**{tiny!r}), resume_from={resume!r},
        vocab=v, graph=g, text_embeddings=emb, progress=False)
"""


def _child(out: Path, resume=None, delay=0.0) -> subprocess.Popen:
    code = CHILD.format(threads=torch.get_num_threads(), delay=delay, out=str(out), run=RUN, tiny=TINY, resume=resume)
    return subprocess.Popen([sys.executable, "-c", code], cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})


def _log(path: Path) -> list[dict]:
    recs = [json.loads(x) for x in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in recs]


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
    killed = tmp_path / "killed"
    p = _child(killed, delay=0.05)
    deadline = time.monotonic() + 120
    while not (killed / "checkpoint-10" / "checkpoint.json").exists():
        assert p.poll() is None, p.stdout.read().decode()
        assert time.monotonic() < deadline, "the child never reached step 10"
        time.sleep(0.01)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL
    last = latest_checkpoint(killed)
    assert last is not None and last.name.startswith("checkpoint-")  # killed mid-run: no final checkpoint
    assert 10 <= int(last.name.split("-")[1]) < RUN["steps"]

    r = _child(killed, resume="latest")
    out, _ = r.communicate(timeout=300)
    assert r.returncode == 0, out.decode()

    v, g = toy_vocabulary()
    emb = np.random.default_rng(0).normal(size=(len(v), 24)).astype(np.float32)
    ref = train(TrainConfig(out_dir=str(tmp_path / "ref"), **RUN), MedTokConfig(**TINY), vocab=v, graph=g,
                text_embeddings=emb, progress=False)
    a, b = load_file(ref / "model.safetensors"), load_file(killed / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the metrics too: the resumed log drops what the killed run logged past its checkpoint
    assert _log(killed / "train_log.jsonl") == _log(ref / "train_log.jsonl")
