"""Trainable GNN over a code's neighbourhood (torch-geometric GCN / GAT / GraphSAGE).

Node features are the frozen text embeddings of the nodes' descriptions, so the graph
encoder sees what each neighbour *is*, not an arbitrary id. `num_hops` layers: at
training time the input is a batch of sampled k-hop subgraphs; for whole-vocabulary
tokenization the same layers run once over the full graph, which gives every node its
k-hop representation at once (no per-code sampling).
"""

from __future__ import annotations

import torch
from torch import nn


def _conv(kind: str, d_in: int, d_out: int, heads: int = 4):
    from torch_geometric.nn import GATConv, GCNConv, SAGEConv

    if kind == "gcn":
        return GCNConv(d_in, d_out, add_self_loops=True, normalize=True)
    if kind == "sage":
        return SAGEConv(d_in, d_out, aggr="mean")
    if kind == "gat":
        return GATConv(d_in, d_out // heads, heads=heads, add_self_loops=True)
    raise ValueError(f"unknown graph encoder {kind!r}")


class GraphEncoder(nn.Module):
    def __init__(self, kind: str, d_in: int, hidden: int, num_layers: int, dropout: float = 0.1):
        super().__init__()
        self.kind = kind
        self.input = nn.Linear(d_in, hidden)
        self.convs = nn.ModuleList([_conv(kind, hidden, hidden) for _ in range(num_layers)])
        self.norms = nn.ModuleList([nn.LayerNorm(hidden) for _ in range(num_layers)])
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """x [n, d_in] node features, edge_index [2, E] (both directions) -> [n, hidden]."""
        h = torch.relu(self.input(x))
        for conv, norm in zip(self.convs, self.norms):
            # residual keeps a node's own description dominant; neighbours refine it
            h = norm(h + self.dropout(torch.relu(conv(h, edge_index))))
        return h
