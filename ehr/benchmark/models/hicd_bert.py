"""HICD-BERT (issue 22; Thukral et al. 2026): masked-code pretraining of the BEHRT-style model
(`models/behrt.py`, any tokenizer: `flat`, `hier-XYZ` with any level combination, ...) on the
TRAINING split, then fine-tuning per task with the same `TrainConfig` as every other arm (model
name `behrt-mlm`; `behrt` is the same model without pretraining, at an equal fine-tuning budget).

Masked-code objective (`MLMConfig`; stated):
- maskable positions: real code tokens (never padding, [CLS], ages, segments or positions)
  whose code is a medical code (`MASKABLE_PREFIXES`: ICD-9/10 diagnoses and procedures, ATC;
  not sex, stay markers or drug names);
- each maskable position is masked with probability `mask_prob` = 0.15 (at least one per
  sample that has one); a masked code's whole input vector (its flat row and level rows, or all
  its level tokens in the "-tok" mode) is replaced by one learned [MASK] vector, so its levels
  do not give it away; age / segment / position stay;
- target: the masked code's index in the code space, cross-entropy of a linear head over the
  encoder's state at that position (the head is dropped after pretraining);
- `epochs` = 5 passes over the training samples (LengthBuckets batches of `TrainConfig`'s batch
  size), AdamW lr 1e-3, weight decay 0.01, gradient clip 1.0; no early stopping;
- cached per (data, task, tokenizer, seed, config) as `<grid out>/pretrain/<dataset>/<task
  key>/mlm__<tokenizer>__s<seed>__<key>.pt` (+ `.json`), written atomically and reused.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ehr.benchmark.features import SequenceData
from ehr.benchmark.train import LengthBuckets, to_batch
from medbase.atomic import atomic_path, atomic_write_text
from medbase.jsonconfig import JsonConfig

MASKABLE_PREFIXES = ("ICD9CM:", "ICD10CM:", "ICD9PCS:", "ICD10PCS:", "ATC:")


@dataclass
class MLMConfig(JsonConfig):
    epochs: int = 5
    mask_prob: float = 0.15
    lr: float = 1e-3
    weight_decay: float = 0.01
    batch_size: int = 32
    grad_clip: float = 1.0


def maskable_codes(codes) -> np.ndarray:
    out = np.array([str(c).startswith(MASKABLE_PREFIXES) for c in codes], dtype=bool)
    if len(out):
        out[0] = False
    return out


def mask_codes(codes: torch.Tensor, maskable: torch.Tensor, prob: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask [B, L] bool, labels [B, L]: the code index where masked, -100 elsewhere)."""
    can = maskable[codes] & (codes > 0)
    r = torch.rand(codes.shape, generator=generator)
    mask = can & (r < prob)
    # at least one masked position per sample that has a maskable one (the lowest draw)
    none = can.any(1) & ~mask.any(1)
    if none.any():
        rr = torch.where(can, r, torch.full_like(r, 2.0))
        first = rr.argmin(1)
        mask[none, first[none]] = True
    labels = torch.where(mask, codes, torch.full_like(codes, -100))
    return mask, labels


def encode_states(net, batch: dict, mask: torch.Tensor | None = None, mask_vec: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`SequenceEncoder.encode` step by step, with the code vectors of `mask` positions replaced
    by `mask_vec`: ([B, d] normed [CLS] state (= net.encode when mask is None), [B, L, d] the
    state of each code's first slot)."""
    codes = batch["codes"]
    x, tmask = net.tokenizer(codes)
    B, L, T, d = x.shape
    if mask is not None:
        x = torch.where(mask.view(B, L, 1, 1), mask_vec.view(1, 1, 1, d).expand(B, L, T, d), x)
    x = x + net.positions(batch).unsqueeze(2)
    x = net.drop(x.reshape(B, L * T, d))
    m = tmask.reshape(B, L * T)
    x = torch.cat([net.cls.expand(B, 1, d), x], 1)
    keep = torch.cat([torch.ones(B, 1, dtype=torch.bool, device=x.device), m], 1)
    h = net.encoder(x, src_key_padding_mask=~keep)
    states = h[:, 1:].reshape(B, L, T, d)[:, :, 0]
    return net.norm(h[:, 0]), states


class MLMHead(nn.Module):
    def __init__(self, d: int, n_codes: int):
        super().__init__()
        self.mask_vec = nn.Parameter(torch.randn(d) * 0.02)
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, n_codes)

    def forward(self, states):
        return self.out(self.norm(states))


def mlm_loss(net, head: MLMHead, batch: dict, maskable: torch.Tensor, prob: float, generator) -> tuple[torch.Tensor, torch.Tensor]:
    mask, labels = mask_codes(batch["codes"], maskable, prob, generator)
    _, states = encode_states(net, batch, mask, head.mask_vec)
    logits = head(states[mask])
    if logits.shape[0] == 0:
        return logits.sum() * 0.0, mask
    return nn.functional.cross_entropy(logits, labels[mask]), mask


def pretrain_mlm(net, data: SequenceData, codes: list, seed: int, cfg: MLMConfig | None = None) -> dict:
    """Masked-code pretraining of `net` (in place) on the training rows of `data`."""
    cfg = cfg or MLMConfig()
    tr = data.rows("train")
    maskable = torch.from_numpy(maskable_codes(codes))
    head = MLMHead(net.cfg.d_model, len(codes))
    params = list(net.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(int(seed) * 7919 + 17)
    sampler = LengthBuckets(data.length[tr], cfg.batch_size, seed + 1_000_003)
    hist, t0, seen = {"loss": [], "masked_tokens": 0}, time.perf_counter(), 0
    net.train()
    for _ in range(cfg.epochs):
        tot, nb = 0.0, 0
        for ids in sampler:
            b = to_batch(data, tr[np.asarray(ids)])
            loss, mask = mlm_loss(net, head, b, maskable, cfg.mask_prob, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            tot, nb = tot + float(loss.detach()), nb + 1
            hist["masked_tokens"] += int(mask.sum())
            seen += len(ids)
        hist["loss"].append(tot / max(nb, 1))
    hist["pretrain_seconds"] = time.perf_counter() - t0
    hist["pretrain_samples_seen"] = seen
    hist["pretrain_samples_per_s"] = seen / max(hist["pretrain_seconds"], 1e-9)
    return hist


def mlm_key(data_key: str, tokenizer: str, seed: int, cfg: MLMConfig, model_cfg: dict) -> str:
    part = json.dumps({"data": data_key, "tok": tokenizer, "seed": seed, "mlm": cfg.to_dict(), "model": model_cfg},
                      sort_keys=True)
    return hashlib.blake2b(part.encode(), digest_size=6).hexdigest()


def cached_pretrain(net, data: SequenceData, codes: list, tokenizer: str, seed: int, cfg: MLMConfig,
                    cache_dir: str | Path | None, data_key: str) -> dict:
    """Pretrain `net` in place, or load the finished pretraining of this (data, tokenizer, seed,
    config) from `cache_dir`."""
    key = mlm_key(data_key, tokenizer, seed, cfg, net.cfg.to_dict())
    if cache_dir is not None:
        path = Path(cache_dir) / f"mlm__{tokenizer}__s{seed}__{key}.pt"
        meta_path = path.with_suffix(".json")
        if path.exists() and meta_path.exists():
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return {**json.loads(meta_path.read_text()), "cached": True}
    hist = pretrain_mlm(net, data, codes, seed, cfg)
    meta = {"key": key, "mlm_config": cfg.to_dict(), "seed": seed, "tokenizer": tokenizer, **hist, "cached": False}
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save(net.state_dict(), tmp)
        atomic_write_text(meta_path, json.dumps(meta, indent=1, default=str) + "\n")
    return meta
