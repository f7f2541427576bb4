"""Throughput of the neural models: samples (patient prediction windows) per second for
training (forward + backward + AdamW step, length-bucketed batches of 32) and inference
(length-sorted chunks of 256), in this process with its torch thread count.

    measure_throughput(prepared, task_index=0, models=("transformer", "behrt"), tokenizers=("flat", "medtok"))
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ehr.benchmark.models.behrt import BEHRT
from ehr.benchmark.models.encoder import ModelConfig
from ehr.benchmark.models.transformer import TransformEHR
from ehr.benchmark.prepare import Prepared
from ehr.benchmark.tokenizers import make_tokenizer
from ehr.benchmark.train import LengthBuckets, TrainConfig, loss_fn, n_outputs, predict, to_batch


def measure_throughput(prep: Prepared, task_index: int = 0, models=("transformer", "behrt"), tokenizers=("flat",),
                       max_samples: int = 4096, mcfg: ModelConfig | None = None, tcfg: TrainConfig | None = None,
                       seed: int = 0) -> list[dict]:

    mcfg, tcfg = mcfg or ModelConfig(), tcfg or TrainConfig()
    b = prep.bundles[task_index]
    d = b.data
    rows = np.random.default_rng(seed).permutation(len(d))[:max_samples]
    out = []
    for model in models:
        for tok in tokenizers:
            torch.manual_seed(seed)
            tk = make_tokenizer(tok, mcfg.d_model, prep.space, b.seen, prep.resources)
            net = (TransformEHR if model == "transformer" else BEHRT)(tk, n_outputs(d.kind, len(d.classes)), mcfg)
            opt = torch.optim.AdamW(net.parameters(), lr=tcfg.lr)
            net.train()
            warm = to_batch(d, rows[:8])
            loss_fn(d.kind, net(warm), warm["y"]).backward()          # warm-up (lazy init, allocator)
            opt.zero_grad()
            t0 = time.perf_counter()
            for batch in LengthBuckets(d.length[rows], tcfg.batch_size, seed):
                bt = to_batch(d, rows[np.asarray(batch)])
                loss = loss_fn(d.kind, net(bt), bt["y"])
                opt.zero_grad()
                loss.backward()
                opt.step()
            t_train = time.perf_counter() - t0
            t0 = time.perf_counter()
            predict(net, d, rows, tcfg.eval_batch_size)
            t_inf = time.perf_counter() - t0
            out.append({"task": b.label, "model": model, "tokenizer": tok, "samples": int(len(rows)),
                        "mean_tokens": float(np.minimum(d.length[rows], mcfg.max_len).mean()),
                        "train_samples_per_s": len(rows) / t_train, "infer_samples_per_s": len(rows) / t_inf,
                        "threads": torch.get_num_threads()})
    return out
