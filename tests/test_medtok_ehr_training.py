"""One MedTok training path (issue 21): the EHR benchmark's `build_medtok` trains through
`medtok.train.train` under the deterministic CPU kernels, with the thread count recorded, so two
fresh trainings with 2 threads give identical checkpoints."""

from __future__ import annotations

import json

import numpy as np
import torch
from safetensors.torch import load_file

from ehr.benchmark.code_vectors import build_medtok, medtok_dir
from medtok.toy import toy_vocabulary

TINY = dict(text_dim=24, gnn_hidden=32, embed_dim=16, codebook_size=60, top_k=3, attn_heads=2, max_neighbors=6)


def test_two_fresh_ehr_medtok_trainings_with_2_threads_are_identical(tmp_path):
    v, g = toy_vocabulary()
    emb = np.random.default_rng(0).normal(size=(len(v), 24)).astype(np.float32)
    before = torch.get_num_threads()
    outs = []
    for run in ("a", "b"):
        outs.append(build_medtok(["ICD10CM", "ICD9CM"], "both-n12000", steps=6, root=tmp_path / run, progress=False,
                                 threads=2, vocab=v, graph=g, text_embeddings=emb, model_overrides=TINY,
                                 train_overrides={"batch_size": 32, "heldout_fraction": 0.1, "restart_every": 2,
                                                  "restart_idle": 2}))
    assert torch.get_num_threads() == before  # the run's thread count does not leak
    assert outs[0] == medtok_dir(["ICD10CM", "ICD9CM"], "both-n12000", 6, tmp_path / "a")
    wa, wb = load_file(outs[0] / "model.safetensors"), load_file(outs[1] / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    for o in outs:
        m = json.loads((o / "metrics.json").read_text())
        assert m["threads"] == 2 and m["deterministic_cpu_kernels"] is True and m["device"] == "cpu"
    # a GPU-trained checkpoint never shares the CPU one's cache entry
    assert medtok_dir(["ICD10CM"], "both-n12000", 6, tmp_path, "cuda") != medtok_dir(["ICD10CM"], "both-n12000", 6, tmp_path)
