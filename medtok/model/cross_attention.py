"""Batched cross-modal attention (paper Eq. 1-2).

e_t^c: the code's text query attends over the graph-encoder states of its neighbourhood
       (the code itself + up to `max_neighbors` direct neighbours);
e_g^c: the code's graph query attends over the text embeddings of the same nodes.
Each code has its own padded key set, so one call handles a whole batch.

Deviation from the paper (Eq. 1-2 are plain softmax attention): each block adds a residual
connection and a LayerNorm, `LayerNorm(query + Dropout(attn))`, as the official MedTok code
does (one block per direction here, two stacked layers there). The residual keeps the code's
own projected query in e^c, so the shared tokens cannot drift away from the code itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CrossAttentionBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float = 0.1):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor, kv: torch.Tensor | None = None) -> torch.Tensor:
        """query [B, d], keys [B, L, d], mask [B, L] (True = real key) -> [B, d].

        kv [B, L, 2d] = self.kv(keys) may be passed instead of keys when it was computed
        once per node and gathered (whole-graph tokenization).
        """
        kv = self.kv(keys) if kv is None else kv
        b, l, d2 = kv.shape
        d, h = d2 // 2, self.heads
        q = self.q(query).view(b, h, 1, d // h)
        k, v = kv.view(b, l, 2, h, d // h).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        attn = self.out(attn.reshape(b, d))
        # not in Eq. 1-2: residual + LayerNorm (module docstring)
        return self.norm(query + self.dropout(attn))


class CrossModalAttention(nn.Module):
    """Gives (e_t^c, e_g^c) from the projected queries and the per-code key sets."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.1):
        super().__init__()
        self.text_to_graph = CrossAttentionBlock(dim, heads, dropout)
        self.graph_to_text = CrossAttentionBlock(dim, heads, dropout)

    def forward(self, q_text, q_graph, graph_kv, text_kv, mask):
        """graph_kv / text_kv [B, L, 2d]: `node_kv` of each code's key nodes."""
        return (self.text_to_graph(q_text, None, mask, kv=graph_kv),
                self.graph_to_text(q_graph, None, mask, kv=text_kv))
