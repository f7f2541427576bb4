"""Training and prediction of the neural models (through accelerate: the same code runs in one
process, several CPU processes or several GPUs under `accelerate launch`).

The rule every tokenizer gets (`TrainConfig`, fixed and documented): AdamW (lr 1e-3, weight
decay 0.01), batch 32, gradient clip 1.0, at most 30 epochs, early stopping on the validation
split's loss (MEDS `tuning`) with patience 3, the best epoch's weights restored. With an empty
validation split the model trains `fallback_epochs` epochs (stated in the result).

Prediction (validation and test) runs in one process over the samples in their order, in
fixed-size chunks with no shuffling, no sampler and no `drop_last`; `predict` checks that it
returns exactly one prediction per requested sample. The test set is never resampled,
rebalanced or cut (the MedTok release's balanced sampler on the test set is what this avoids).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ehr.benchmark.features import SequenceData
from medbase.jsonconfig import JsonConfig


@dataclass
class TrainConfig(JsonConfig):
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    max_epochs: int = 30
    patience: int = 3
    fallback_epochs: int = 10
    eval_batch_size: int = 256
    grad_clip: float = 1.0

    def __post_init__(self):
        if self.batch_size < 1 or self.eval_batch_size < 1 or self.max_epochs < 1 or self.patience < 1:
            raise ValueError("batch sizes, max_epochs and patience must be >= 1")
        if self.lr <= 0:
            raise ValueError("lr must be > 0")


class HeldOutIntegrityError(Exception):
    """Predictions do not cover the requested samples exactly once, in order."""


def n_outputs(kind: str, n_classes: int) -> int:
    return 1 if kind == "binary" else n_classes


def to_batch(data: SequenceData, idx: np.ndarray, device=None) -> dict:
    """Tensors of the samples `idx`, trimmed to the longest sequence among them."""
    idx = np.asarray(idx, dtype=np.int64)
    L = max(1, int(data.length[idx].max()) if len(idx) else 1)
    L = min(L, data.codes.shape[1])
    t = {k: torch.from_numpy(np.ascontiguousarray(getattr(data, k)[idx, :L]))
         for k in ("codes", "visit_pos", "visit_seg", "days", "age")}
    t["y"] = torch.from_numpy(data.y[idx]).float() if data.kind != "multiclass" else torch.from_numpy(data.y[idx])
    return {k: v.to(device) for k, v in t.items()} if device is not None else t


def loss_fn(kind: str, logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    if kind == "binary":
        return nn.functional.binary_cross_entropy_with_logits(logits.squeeze(-1), y.float(), reduction=reduction)
    if kind == "multiclass":
        return nn.functional.cross_entropy(logits, y.long(), reduction=reduction)
    return nn.functional.binary_cross_entropy_with_logits(logits, y.float(), reduction=reduction).mean(-1) \
        if reduction == "none" else nn.functional.binary_cross_entropy_with_logits(logits, y.float(), reduction=reduction)


def probabilities(kind: str, logits: torch.Tensor) -> torch.Tensor:
    if kind == "binary":
        return torch.sigmoid(logits.squeeze(-1))
    if kind == "multiclass":
        return torch.softmax(logits, -1)
    return torch.sigmoid(logits)


def eval_chunks(n: int, batch_size: int, lengths: np.ndarray | None = None, max_tokens: int = 4096) -> list[np.ndarray]:
    """Consecutive index chunks covering 0..n-1 exactly once: at most `batch_size` samples and,
    with `lengths` (ascending), at most `max_tokens` padded tokens per chunk (long sequences go
    in small chunks, short ones in large ones)."""
    if lengths is None:
        return [np.arange(a, min(n, a + batch_size)) for a in range(0, n, batch_size)]
    out, a = [], 0
    while a < n:
        b = a + 1
        while b < n and b - a < batch_size and (b - a + 1) * max(int(lengths[b]), 1) <= max_tokens:
            b += 1
        out.append(np.arange(a, b))
        a = b
    return out


@torch.no_grad()
def predict(model: nn.Module, data: SequenceData, idx: np.ndarray, batch_size: int = 256,
            with_loss: bool = False):
    """Probabilities for the samples `idx`, in that order (one process; no sampler, no drop_last).
    Chunks are formed over the samples sorted by length with a padded-token budget (less
    padding) and the outputs put back in the requested order; every sample is scored exactly once."""
    model.eval()
    idx = np.asarray(idx, dtype=np.int64)
    device = next(model.parameters()).device
    order = np.argsort(data.length[idx], kind="stable")
    outs, losses, done = [], [], []
    for chunk in eval_chunks(len(idx), batch_size, np.minimum(data.length[idx][order], data.codes.shape[1])):
        rows = order[chunk]
        b = to_batch(data, idx[rows], device)
        logits = model(b)
        if logits.shape[0] != len(rows):
            raise HeldOutIntegrityError(f"{logits.shape[0]} outputs for a chunk of {len(rows)} samples")
        outs.append(probabilities(data.kind, logits).float().cpu().numpy())
        done.append(rows)
        if with_loss:
            losses.append(loss_fn(data.kind, logits, b["y"], reduction="none").float().cpu().numpy())
    shape = (0,) if data.kind == "binary" else (0, len(data.classes))
    p = np.concatenate(outs) if outs else np.zeros(shape, dtype=np.float32)
    done = np.concatenate(done) if done else np.zeros(0, dtype=np.int64)
    if len(done) != len(idx) or not np.array_equal(np.sort(done), np.arange(len(idx))):
        raise HeldOutIntegrityError(f"scored {len(done)} rows for {len(idx)} samples (each exactly once required)")
    out = np.empty_like(p)
    out[done] = p
    p = out
    if len(p) != len(idx):
        raise HeldOutIntegrityError(f"{len(p)} predictions for {len(idx)} samples")
    if with_loss:
        return p, (float(np.concatenate(losses).mean()) if losses else float("nan"))
    return p


class LengthBuckets(torch.utils.data.Sampler):
    """Training batches of similar length: each epoch, a seeded permutation is cut into pools
    of `pool` batches, each pool sorted by sequence length and cut into batches, and the
    batches shuffled. Every training sample is used once per epoch; batches are trimmed to
    their longest sample, so short histories do not pay for long ones (most samples are short)."""

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int, pool: int = 8):
        self.lengths, self.bs, self.pool = np.asarray(lengths), batch_size, pool
        self.rng = np.random.default_rng([seed, 7])

    def __iter__(self):
        perm = self.rng.permutation(len(self.lengths))
        batches = []
        step = self.bs * self.pool
        for a in range(0, len(perm), step):
            chunk = perm[a:a + step]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [chunk[b:b + self.bs].tolist() for b in range(0, len(chunk), self.bs)]
        for i in self.rng.permutation(len(batches)):
            yield batches[i]

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.bs)


def fit(model: nn.Module, data: SequenceData, cfg: TrainConfig, seed: int, progress=None) -> dict:
    """Train on the `train` rows with early stopping on `tuning`; restores the best weights.
    Returns the history (epochs, best epoch, losses, seconds, samples seen)."""
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    tr, va = data.rows("train"), data.rows("tuning")
    acc = Accelerator(cpu=not torch.cuda.is_available())
    loader = DataLoader(np.arange(len(tr)), batch_sampler=LengthBuckets(data.length[tr], cfg.batch_size, seed),
                        collate_fn=lambda ids: to_batch(data, tr[np.asarray(ids)]))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model, opt, loader = acc.prepare(model, opt, loader)
    epochs = cfg.max_epochs if len(va) else cfg.fallback_epochs
    best, best_state, bad, hist = float("inf"), None, 0, {"train_loss": [], "val_loss": []}
    seen, t0 = 0, time.perf_counter()
    for epoch in range(epochs):
        model.train()
        tot, nb = 0.0, 0
        for b in loader:
            logits = model(b)
            loss = loss_fn(data.kind, logits, b["y"])
            opt.zero_grad(set_to_none=True)
            acc.backward(loss)
            if cfg.grad_clip:
                acc.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            tot, nb = tot + float(loss.detach()), nb + 1
            seen += len(b["y"])
        hist["train_loss"].append(tot / max(nb, 1))
        if len(va):
            # every process scores the whole validation split itself: same decision everywhere
            _, vl = predict(acc.unwrap_model(model), data, va, cfg.eval_batch_size, with_loss=True)
            hist["val_loss"].append(vl)
            if vl < best - 1e-6:
                best, bad = vl, 0
                best_state = copy.deepcopy(acc.unwrap_model(model).state_dict())
                hist["best_epoch"] = epoch + 1
            else:
                bad += 1
                if bad >= cfg.patience:
                    break
        if progress is not None:
            progress(epoch + 1, epochs)
    hist["epochs"] = epoch + 1
    hist["train_seconds"] = time.perf_counter() - t0
    hist["train_samples_seen"] = seen * acc.num_processes
    hist["early_stopping"] = "validation loss" if len(va) else f"none (empty tuning split): {epochs} epochs"
    net = acc.unwrap_model(model)
    if best_state is not None:
        net.load_state_dict(best_state)
    hist["model"] = net
    return hist
