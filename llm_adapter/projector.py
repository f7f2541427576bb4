"""Projector: the G code vectors [n, G, d] of n codes -> soft prefix tokens [n, P, H].

Linear or a 2-layer MLP with GELU (LLaVA). Each output token can be rescaled to a fixed
L2 norm: the LM's token embeddings have a narrow norm range, and a prefix far outside it
is either ignored or swamps the attention (the prefix probe measured a frozen LM reading
the prefix only once its norm was matched).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from llm_adapter.config import ProjectorConfig
from medbase.atomic import atomic_path

PROJECTOR_WEIGHTS = "projector.safetensors"
PROJECTOR_CONFIG = "projector_config.json"


def mean_embedding_norm(model) -> float:
    """Mean L2 norm of the rows of the LM's input embedding matrix."""
    w = model.get_input_embeddings().weight
    with torch.no_grad():
        return float(w.float().norm(dim=-1).mean())


class CodeProjector(nn.Module):
    def __init__(self, config: ProjectorConfig):
        super().__init__()
        if config.target_norm == "auto":
            raise ValueError("resolve target_norm='auto' (e.g. with mean_embedding_norm(lm)) before building")
        self.config = config
        c = config
        if c.pooling == "concat":
            d_in, d_out = c.num_groups * c.input_dim, c.tokens_per_code * c.hidden_size
        elif c.pooling == "mean":
            d_in, d_out = c.input_dim, c.tokens_per_code * c.hidden_size
        else:  # per_group: one shared map per group vector, told apart by a learned group embedding
            d_in, d_out = c.input_dim, c.hidden_size
            self.group_embed = nn.Parameter(torch.zeros(c.num_groups, c.input_dim))
        if c.kind == "linear":
            self.net = nn.Linear(d_in, d_out)
        else:
            self.net = nn.Sequential(nn.Linear(d_in, c.mlp_hidden), nn.GELU(), nn.Linear(c.mlp_hidden, d_out))

    @property
    def tokens_per_code(self) -> int:
        return self.config.tokens_per_code

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        """vectors [n, G, d] -> tokens [n, P, H]."""
        c = self.config
        if vectors.dim() != 3 or vectors.shape[1:] != (c.num_groups, c.input_dim):
            raise ValueError(f"expected code vectors [n, {c.num_groups}, {c.input_dim}], got {list(vectors.shape)}")
        p = next(self.parameters())
        v = vectors.to(device=p.device, dtype=p.dtype)
        n = v.shape[0]
        if c.pooling == "concat":
            out = self.net(v.reshape(n, -1)).reshape(n, c.tokens_per_code, c.hidden_size)
        elif c.pooling == "mean":
            out = self.net(v.mean(dim=1)).reshape(n, c.tokens_per_code, c.hidden_size)
        else:
            out = self.net(v + self.group_embed)
        if c.target_norm is not None:
            out = out * (float(c.target_norm) / out.norm(dim=-1, keepdim=True).clamp(min=1e-6))
        return out

    # ---- persistence ---------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        with atomic_path(directory / PROJECTOR_WEIGHTS) as tmp:
            save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}, str(tmp))
        self.config.save(directory / PROJECTOR_CONFIG)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "CodeProjector":
        directory = Path(directory)
        proj = cls(ProjectorConfig.load_saved(directory / PROJECTOR_CONFIG))
        proj.load_state_dict(load_file(str(directory / PROJECTOR_WEIGHTS)))
        return proj
