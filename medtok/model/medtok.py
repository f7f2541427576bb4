"""The MedTok model: text + graph encoders, projectors, cross-attention, one region codebook.

Per code i with text embedding h_t (frozen encoder) and graph state h_g (GNN, centre node):
    e_t^s = W_t h_t,  e_g^s = W_g h_g                        modality-specific (d)
    e_t^c, e_g^c = CrossModalAttention(...)                  cross-modal (Eq. 1-2)
and the four embeddings are quantized in their regions (text / graph / shared / shared).

Checkpoints: `config.json` + `model.safetensors` + the `checkpoint.json` manifest
(`medtok.checkpoint`), each written atomically; `from_pretrained` verifies them and raises
`CheckpointError` naming the damaged file instead of loading it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from medbase.atomic import atomic_path
from medtok.checkpoint import MANIFEST_NAME, CheckpointError, verify, write_manifest
from medtok.model.config import GROUP_REGION, GROUPS, MedTokConfig
from medtok.model.cross_attention import CrossModalAttention
from medtok.model.graph_encoder import GraphEncoder
from medtok.model.quantizer import RegionQuantizer

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


class MedTokModel(nn.Module):
    def __init__(self, config: MedTokConfig):
        super().__init__()
        self.config = c = config
        self.graph_encoder = GraphEncoder(c.graph_encoder, c.text_dim, c.gnn_hidden, c.num_hops, c.dropout)
        d = c.embed_dim
        self.text_specific = nn.Linear(c.text_dim, d)
        self.graph_specific = nn.Linear(c.gnn_hidden, d)
        self.text_query = nn.Linear(c.text_dim, d)
        self.graph_query = nn.Linear(c.gnn_hidden, d)
        self.text_keys = nn.Linear(c.text_dim, d)
        self.graph_keys = nn.Linear(c.gnn_hidden, d)
        self.cross = CrossModalAttention(d, c.attn_heads, c.dropout)
        self.quantizer = RegionQuantizer(c.codebook_size, d, c.regions(), c.top_k, c.temperature, c.alpha, c.l2_norm,
                                         c.codebook_init)

    # ---- embeddings -------------------------------------------------------------
    def node_kv(self, x: torch.Tensor, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-node attention keys/values [n, 2d] of the graph and text sides (computed once per node)."""
        return (self.cross.text_to_graph.kv(self.graph_keys(states)),
                self.cross.graph_to_text.kv(self.text_keys(x)))

    def embed(self, x: torch.Tensor, states: torch.Tensor, centers: torch.Tensor, keys: torch.Tensor,
              text_input: torch.Tensor | None = None, kv=None) -> dict[str, torch.Tensor]:
        """Pre-quantization embeddings of the codes at rows `centers` of the node set.

        x [n, text_dim] node text features, states [n, hidden] GNN outputs, centers [B],
        keys [B, L] node rows of each code's attention key set (-1 = padding; column 0 is
        the code itself), text_input [B, text_dim] overrides h_t (augmented view), kv = `node_kv`
        when already computed.
        """
        h_t = x[centers] if text_input is None else text_input
        h_g = states[centers]
        mask = keys >= 0
        k = keys.clamp_min(0)
        kv_g, kv_t = self.node_kv(x, states) if kv is None else kv
        e_tc, e_gc = self.cross(self.text_query(h_t), self.graph_query(h_g), kv_g[k], kv_t[k], mask)
        return {"text_specific": self.text_specific(h_t), "graph_specific": self.graph_specific(h_g),
                "shared_text": e_tc, "shared_graph": e_gc}

    def quantize(self, emb: dict[str, torch.Tensor], with_distances: bool = True) -> dict:
        return {g: self.quantizer(emb[g], GROUP_REGION[g], with_distances) for g in GROUPS}

    # ---- whole-graph tokenization --------------------------------------------------
    @torch.no_grad()
    def tokenize_graph(self, x: torch.Tensor, edge_index: torch.Tensor, key_table: torch.Tensor,
                       rows: torch.Tensor | None = None, batch_size: int = 1024, progress: bool = True):
        """Tokens of every node (or `rows`) from one full-graph GNN pass.

        x [V, text_dim], edge_index [2, E] both directions, key_table [V, L] (see
        `features.neighbor_table`). Returns ids [n, 4, K] int64, weights [n, 4, K], vectors [n, 4, d].
        Batches of ~1k codes keep each [batch, region] score matrix cache-resident (1.5x faster than 4k).
        The inputs may live anywhere: they are moved to the model's device for the computation, and
        the table comes back on the CPU (it is cached on disk and looked up row by row).
        """
        was_training = self.training
        self.eval()
        dev = self.quantizer.codebook.device
        x, edge_index, key_table = x.to(dev), edge_index.to(dev), key_table.to(dev)
        states = self.graph_encoder(x, edge_index)
        kv = self.node_kv(x, states)
        rows = torch.arange(len(x), device=dev) if rows is None else rows.to(dev)
        K, d = self.config.top_k, self.config.embed_dim
        cpu = torch.device("cpu")
        ids = torch.empty(len(rows), 4, K, dtype=torch.long, device=cpu)
        weights = torch.empty(len(rows), 4, K, dtype=torch.float32, device=cpu)
        vectors = torch.empty(len(rows), 4, d, dtype=torch.float32, device=cpu)
        for start in tqdm(range(0, len(rows), batch_size), desc="tokenize", disable=not progress):
            r = rows[start:start + batch_size]
            out = self.quantize(self.embed(x, states, r, key_table[r], kv=kv), with_distances=False)
            for j, g in enumerate(GROUPS):
                ids[start:start + len(r), j] = out[g].indices
                weights[start:start + len(r), j] = out[g].weights
                vectors[start:start + len(r), j] = out[g].quantized
        self.train(was_training)
        return ids, weights, vectors

    # ---- persistence ----------------------------------------------------------------
    MODEL_FILES = (CONFIG_NAME, WEIGHTS_NAME)

    def save_pretrained(self, directory: str | Path) -> None:
        """config.json + model.safetensors (each atomically), then the manifest over both."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.save(directory / CONFIG_NAME)
        with atomic_path(directory / WEIGHTS_NAME) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(tmp))
        write_manifest(directory, list(self.MODEL_FILES))

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device | None = None) -> "MedTokModel":
        """Load and verify a checkpoint (manifest digests when it has one, else parse + shape
        checks); `CheckpointError` names the damaged file. `device`: where to put the model."""
        directory = Path(directory)
        if not (directory / WEIGHTS_NAME).exists():
            raise FileNotFoundError(f"no MedTok checkpoint at {directory} (missing {WEIGHTS_NAME})")
        if (directory / MANIFEST_NAME).exists() and (reason := verify(directory)):
            raise CheckpointError(f"MedTok checkpoint not loaded: {reason}")
        try:
            model = cls(MedTokConfig.load_saved(directory / CONFIG_NAME))
            model.load_state_dict(load_file(directory / WEIGHTS_NAME))
        except (SafetensorError, ValueError, RuntimeError, OSError) as e:  # parse / shape errors
            raise CheckpointError(f"MedTok checkpoint {directory} is damaged: {e}") from e
        model.eval()
        return model.to(device) if device is not None else model
