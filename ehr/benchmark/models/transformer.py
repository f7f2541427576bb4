"""TransformEHR-style encoder: code tokens + visit segment (learned, counted back from the
latest visit, so "the current visit" has one row whatever the history length) + time
(sinusoidal features of days since the sample's first visit), [CLS] pooling."""

from __future__ import annotations

from torch import nn

from ehr.benchmark.models.encoder import ModelConfig, SequenceEncoder, sinusoid


class TransformEHR(SequenceEncoder):
    def __init__(self, tokenizer: nn.Module, n_out: int, cfg: ModelConfig):
        super().__init__(tokenizer, n_out, cfg)
        self.segment = nn.Embedding(cfg.max_visits, cfg.d_model)
        nn.init.normal_(self.segment.weight, std=0.02)

    def positions(self, batch):
        seg = batch["visit_seg"].clamp(max=self.cfg.max_visits - 1)
        return self.segment(seg) + 0.1 * sinusoid(batch["days"], self.cfg.d_model)
