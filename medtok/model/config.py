"""Configuration of the MedTok tokenizer model (Su et al. 2025, Section 3).

One dataclass, validated on construction and saved as `config.json` beside every
checkpoint (`medbase.jsonconfig.JsonConfig`: a config a user writes rejects unknown
keys; one saved beside a checkpoint loads with a warning naming the keys it ignores). The
defaults are the CPU-sized model; the paper's model differs only in the training budget
(see `medtok.train_cli.PAPER_PRESET`) and N (12k or 21k entries).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from medbase.jsonconfig import JsonConfig

GRAPH_ENCODERS = ("gcn", "gat", "sage")
MODALITIES = ("both", "text", "graph")
GROUPS = ("text_specific", "graph_specific", "shared_text", "shared_graph")
# codebook region queried by each token group: shared embeddings share one region
GROUP_REGION = {"text_specific": "text", "graph_specific": "graph", "shared_text": "shared", "shared_graph": "shared"}


@dataclass
class MedTokConfig(JsonConfig):
    text_encoder: str | None = None      # HF / sentence-transformers path; None = packaged all-MiniLM-L6-v2
    text_dim: int = 384                  # width of the frozen text embeddings (node features)
    graph_encoder: str = "sage"          # gcn | gat | sage (torch-geometric)
    gnn_hidden: int = 128
    num_hops: int = 2                    # GNN layers = subgraph hops
    max_neighbors: int = 8               # neighbour cap per expanded node (training subgraphs, attention keys)
    embed_dim: int = 64                  # d
    codebook_size: int = 12000           # N, split into regions below
    region_fractions: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)  # text-specific, graph-specific, shared
    top_k: int = 4                       # K entries per embedding (Eq. 3)
    temperature: float = 1.0             # softmax(-distance / temperature) weights (Eq. 4)
    l2_norm: bool = True                 # quantize on the unit sphere (as the official code)
    attn_heads: int = 4
    alpha: float = 0.25                  # commitment weight (Eq. 5)
    beta: float = 0.1                    # shared-token alignment weight
    lam: float = 0.1                     # orthogonality weight (lambda)
    nce_temperature: float = 0.07
    modalities: str = "both"             # ablations: "text" (graph edges removed) / "graph" (text replaced by random node ids)
    dropout: float = 0.1
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.region_fractions = tuple(float(f) for f in self.region_fractions)
        if self.graph_encoder not in GRAPH_ENCODERS:
            raise ValueError(f"graph_encoder must be one of {GRAPH_ENCODERS}, got {self.graph_encoder!r}")
        if self.modalities not in MODALITIES:
            raise ValueError(f"modalities must be one of {MODALITIES}, got {self.modalities!r}")
        if len(self.region_fractions) != 3 or any(f <= 0 for f in self.region_fractions):
            raise ValueError("region_fractions needs three positive fractions (text, graph, shared)")
        if abs(sum(self.region_fractions) - 1) > 1e-6:
            raise ValueError(f"region_fractions must sum to 1, got {sum(self.region_fractions)}")
        for name in ("text_dim", "gnn_hidden", "num_hops", "max_neighbors", "embed_dim", "codebook_size", "top_k", "attn_heads"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.embed_dim % self.attn_heads:
            raise ValueError("embed_dim must be divisible by attn_heads")
        if min(self.region_sizes().values()) < self.top_k:
            raise ValueError(f"every codebook region needs >= top_k={self.top_k} entries: {self.region_sizes()}")
        if self.temperature <= 0 or self.nce_temperature <= 0:
            raise ValueError("temperatures must be positive")
        if min(self.alpha, self.beta, self.lam) < 0 or not 0 <= self.dropout < 1:
            raise ValueError("alpha, beta, lam must be >= 0 and dropout in [0, 1)")

    def region_sizes(self) -> dict[str, int]:
        n_text = int(round(self.codebook_size * self.region_fractions[0]))
        n_graph = int(round(self.codebook_size * self.region_fractions[1]))
        return {"text": n_text, "graph": n_graph, "shared": self.codebook_size - n_text - n_graph}

    def regions(self) -> dict[str, tuple[int, int]]:
        """[start, end) row range of each region in the one codebook."""
        out, start = {}, 0
        for name, size in self.region_sizes().items():
            out[name] = (start, start + size)
            start += size
        return out
