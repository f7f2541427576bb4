"""The sequence encoder both neural EHR models share: tokenizer vectors + position encodings ->
[CLS] + Transformer encoder -> [CLS] state -> head. The two models differ only in their
position encodings (`models/transformer.py`: TransformEHR-style visit segment + time;
`models/behrt.py`: BEHRT-style age + A/B segment + visit position).

Small CPU defaults (fixed, the same for every tokenizer; `ModelConfig`): d = 64, 2 layers,
4 heads, feed-forward 128, dropout 0.1 on the input embeddings and the two residual branches
(none on attention weights or inside the feed-forward: costly Bernoulli draws on CPU),
pre-norm, at most 256 code tokens per sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from medbase.jsonconfig import JsonConfig


@dataclass
class ModelConfig(JsonConfig):
    d_model: int = 64
    layers: int = 2
    heads: int = 4
    ff: int = 128
    dropout: float = 0.1
    max_len: int = 256           # code tokens per sample (most recent kept)
    max_visits: int = 64         # visit segment / position rows (older visits share the last row)
    max_age: int = 120

    def __post_init__(self):
        if self.d_model % self.heads:
            raise ValueError("d_model must be divisible by heads")
        for k in ("d_model", "layers", "heads", "ff", "max_len", "max_visits"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"{k} must be >= 1")
        if not 0 <= self.dropout < 1:
            raise ValueError("dropout must be in [0, 1)")


def sinusoid(x: torch.Tensor, d: int, max_period: float = 10_000.0) -> torch.Tensor:
    """[..., d] sin/cos features of a continuous value (days), as transformer positions."""
    half = d // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=x.device, dtype=torch.float32) / half)
    ang = x.unsqueeze(-1).float() * freqs
    out = torch.cat([torch.sin(ang), torch.cos(ang)], -1)
    return out if out.shape[-1] == d else nn.functional.pad(out, (0, d - out.shape[-1]))


class SequenceEncoder(nn.Module):
    def __init__(self, tokenizer: nn.Module, n_out: int, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.cfg, self.tokenizer = cfg, tokenizer
        self.cls = nn.Parameter(torch.randn(d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, cfg.heads, cfg.ff, cfg.dropout, batch_first=True, norm_first=True)
        # no dropout on the attention weights: on CPU it costs a Bernoulli draw per (head, query,
        # key) and forces the slow attention path; dropout stays on embeddings and feed-forward
        layer.self_attn.dropout = 0.0
        layer.dropout.p = 0.0          # likewise inside the feed-forward; residual dropouts stay
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, n_out)
        self.drop = nn.Dropout(cfg.dropout)

    def positions(self, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def encode(self, batch: dict) -> torch.Tensor:
        """[B, d] pooled ([CLS]) representation (the frozen feature of the transfer probe)."""
        codes = batch["codes"]
        x, tmask = self.tokenizer(codes)                      # [B, L, T, d], [B, L, T]
        B, L, T, d = x.shape
        x = x + self.positions(batch).unsqueeze(2)
        x = self.drop(x.reshape(B, L * T, d))
        mask = tmask.reshape(B, L * T)
        x = torch.cat([self.cls.expand(B, 1, d), x], 1)
        keep = torch.cat([torch.ones(B, 1, dtype=torch.bool, device=x.device), mask], 1)
        h = self.encoder(x, src_key_padding_mask=~keep)
        return self.norm(h[:, 0])

    def forward(self, batch: dict) -> torch.Tensor:
        return self.head(self.encode(batch))
