"""BEHRT-style encoder (Li et al. 2020): code tokens + age embedding (integer years at the
event; one extra row for an unknown age) + segment embedding (visits alternate A/B) +
position embedding (the visit's index from the first visit), [CLS] pooling."""

from __future__ import annotations

import torch
from torch import nn

from ehr.benchmark.models.encoder import ModelConfig, SequenceEncoder


class BEHRT(SequenceEncoder):
    def __init__(self, tokenizer: nn.Module, n_out: int, cfg: ModelConfig):
        super().__init__(tokenizer, n_out, cfg)
        d = cfg.d_model
        self.age = nn.Embedding(cfg.max_age + 2, d)          # last row: unknown age
        self.segment = nn.Embedding(2, d)
        self.position = nn.Embedding(cfg.max_visits, d)
        for e in (self.age, self.segment, self.position):
            nn.init.normal_(e.weight, std=0.02)

    def positions(self, batch):
        age = batch["age"]
        a = torch.where(torch.isnan(age), torch.full_like(age, self.cfg.max_age + 1),
                        age.clamp(0, self.cfg.max_age)).long()
        v = batch["visit_pos"]
        return self.age(a) + self.segment(v % 2) + self.position(v.clamp(max=self.cfg.max_visits - 1))
