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
CODEBOOK_INITS = ("randn", "unit")
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
    # InfoNCE temperatures (not in the paper; 0.07 comes from the official code): the shared term
    # contrasts q_t^c with q_g^c, the specific term each modality with its augmented view (issue 21)
    shared_nce_temperature: float = 0.07
    specific_nce_temperature: float = 0.07
    nce_weight: float = 1.0              # scale of both InfoNCE terms (0 = the no-InfoNCE ablation)
    kl_weight: float = 1.0               # scale of the L_KL term
    codebook_init: str = "randn"         # randn (rows of norm ~sqrt(d)) | unit (the same rows scaled to norm 1)
    modalities: str = "both"             # ablations: "text" (graph edges removed) / "graph" (text replaced by random node ids)
    dropout: float = 0.1
    extra: dict = field(default_factory=dict)

    # settings added after checkpoints were published: written to config.json only when they differ
    # from their default, so a default config (and every cache key hashed from it) keeps its bytes
    QUIET_DEFAULTS = {"shared_nce_temperature": 0.07, "specific_nce_temperature": 0.07, "nce_weight": 1.0,
                      "kl_weight": 1.0, "codebook_init": "randn"}

    def to_dict(self) -> dict:
        """As saved: equal InfoNCE temperatures are written as the one `nce_temperature` of older
        configs (same place, same bytes), and the other new settings only when not at their default."""
        out = {}
        for k, v in super().to_dict().items():
            if k == "shared_nce_temperature" and v == self.specific_nce_temperature:
                out["nce_temperature"] = v
            elif k == "specific_nce_temperature" and v == self.shared_nce_temperature:
                continue
            elif not (k in self.QUIET_DEFAULTS and v == self.QUIET_DEFAULTS[k]):
                out[k] = v
        return out

    @classmethod
    def _normalize_dict(cls, d: dict) -> dict:
        # configs saved before issue 21 carry one `nce_temperature` for both InfoNCE terms
        if "nce_temperature" in d:
            t = d.pop("nce_temperature")
            d.setdefault("shared_nce_temperature", t)
            d.setdefault("specific_nce_temperature", t)
        return d

    @classmethod
    def _known_keys(cls) -> set[str]:
        return super()._known_keys() | {"nce_temperature"}

    @property
    def nce_temperature(self) -> float:
        """The one InfoNCE temperature of configs before issue 21 (an error once the two differ)."""
        if self.shared_nce_temperature != self.specific_nce_temperature:
            raise AttributeError("shared_nce_temperature and specific_nce_temperature differ: read them separately")
        return self.shared_nce_temperature

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
        if min(self.temperature, self.shared_nce_temperature, self.specific_nce_temperature) <= 0:
            raise ValueError("temperatures must be positive")
        if self.nce_weight < 0 or self.kl_weight < 0:
            raise ValueError("nce_weight and kl_weight must be >= 0")
        if self.codebook_init not in CODEBOOK_INITS:
            raise ValueError(f"codebook_init must be one of {CODEBOOK_INITS}, got {self.codebook_init!r}")
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
