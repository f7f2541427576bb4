"""MedTokTokenizer: medical codes -> MedTok tokens (ids, weights, quantized vectors).

    tok = MedTokTokenizer.from_pretrained("runs/medtok")      # vocab from the checkpoint's record
    tok = MedTokTokenizer.from_pretrained("runs/medtok", device="cuda")   # compute on a GPU
    enc = tok.encode(["E11.9", "ICD9CM:4280"])                  # any accepted spelling
    enc.ids [n, 4, K], enc.weights [n, 4, K], enc.vectors [n, 4, d], enc.missing

Groups (axis 1): text_specific, graph_specific, shared_text, shared_graph. Token ids are
global rows of the one codebook (0 <= id < vocab_size).

Every code of the vocabulary is tokenized by one full-graph pass on the tokenizer's device
(computed on first use, stored as `token_table.npz` beside the checkpoint, then looked up), so
codes held out of training get tokens from their own description and graph neighbourhood like
any other. The table -- and so every `MedTokEncoding` -- lives on the CPU; `.to(device)` what
you need. The table's cache key covers the model (config + weights), the node features, the
graph and the vocabulary rows, so a changed graph or feature never reuses a stale table; the
file is written atomically and checked on load (parse, key, shapes, id ranges, weights).

A checkpoint trained on an edited graph (`TrainConfig.drop_edge_types`) is tokenized on the
same edited graph: `from_pretrained` removes the recorded edges from the vocabulary's graph
(also from a graph passed in; the edit is a filter, so an already edited graph is unchanged)
and keeps the unedited one as `reference_graph` (evaluation draws related pairs from it).

A code without a description is tokenized from its neighbours' descriptions + graph
(missing="text"); a code without edges from its text alone (missing="graph"). Codes that
cannot be resolved raise `UnknownCodeError`.

Inference only: nothing here imports the training code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from medbase.atomic import atomic_path
from medbase.jsonconfig import JsonConfig
from medbase.paths import default_vocab_dir
from medtok.graph_edits import drop_edges, normalize_edge_specs
from medtok.loading import load_vocabulary
from medtok.model.config import GROUP_REGION, GROUPS
from medtok.model.features import neighbor_table, node_features
from medtok.model.medtok import MedTokModel
from medtok.splits import heldout_mask, read_code_list

log = logging.getLogger(__name__)

TOKENIZER_CONFIG = "tokenizer_config.json"
TRAIN_CONFIG = "train_config.json"       # written by medtok.train; read here as plain JSON
TOKEN_TABLE = "token_table.npz"          # whole-vocabulary tokens, written beside the checkpoint on first use
TABLE_FORMAT = "medtok-token-table-v2"   # part of the cache key


@dataclass
class TokenizerConfig(JsonConfig):
    """What a tokenizer needs besides the model: where its vocabulary is and what it was trained on."""

    CONFIG_NAME = TOKENIZER_CONFIG

    vocab_dir: str | None = None        # None = medbase.paths.default_vocab_dir()
    systems: list | None = None         # code systems the checkpoint was trained on (None = all)
    heldout_fraction: float = 0.05      # of the training run; for the unseen-code evaluation
    heldout_codes: list | None = None   # the run's explicit held-out code ids (never training centres)
    drop_edge_types: list | None = None  # edges the run removed from the graph (medtok.graph_edits)
    drop_edges_touching: list | None = None

    def __post_init__(self):
        if not 0 <= self.heldout_fraction < 1:
            raise ValueError("heldout_fraction must be in [0, 1)")
        self.heldout_codes = read_code_list(self.heldout_codes)
        self.drop_edges_touching = read_code_list(self.drop_edges_touching)
        self.drop_edge_types = normalize_edge_specs(self.drop_edge_types)

    def edit_graph(self, vocab, graph):
        """The graph the checkpoint was trained on: `graph` without the recorded edges."""
        if not self.drop_edge_types:
            return graph
        return drop_edges(vocab, graph, self.drop_edge_types, self.drop_edges_touching)

    @classmethod
    def from_checkpoint(cls, ckpt_dir: str | Path) -> "TokenizerConfig":
        """tokenizer_config.json when present (saved: unknown keys warn), else the matching fields of
        the training run's train_config.json, else the defaults."""
        ckpt_dir = Path(ckpt_dir)
        if (ckpt_dir / TOKENIZER_CONFIG).exists():
            return cls.load_saved(ckpt_dir / TOKENIZER_CONFIG)
        if (ckpt_dir / TRAIN_CONFIG).exists():
            d = json.loads((ckpt_dir / TRAIN_CONFIG).read_text(encoding="utf-8"))
            return cls.from_dict({f.name: d[f.name] for f in fields(cls) if f.name in d})
        return cls()


def table_key(model: MedTokModel, x: torch.Tensor, graph, vocab) -> str:
    """Identity of everything the token table depends on: model config and weights, node features,
    graph (nodes, edges, types) and vocabulary rows."""
    h = hashlib.blake2b(TABLE_FORMAT.encode(), digest_size=20)
    h.update(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    h.update(str(tuple(x.shape)).encode())
    h.update(x.detach().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps([graph.num_nodes, list(graph.edge_type_names)]).encode())
    for arr in (graph.src, graph.dst, graph.etype):
        h.update(np.ascontiguousarray(arr, dtype=np.int64).tobytes())
    h.update("\n".join(vocab.codes["code_id"]).encode())
    h.update("\n".join(vocab.codes["description"].fillna("").astype(str)).encode())
    return h.hexdigest()


@dataclass
class MedTokEncoding:
    code_ids: list[str]
    ids: torch.Tensor        # [n, 4, K] int64
    weights: torch.Tensor    # [n, 4, K] float32, each group's weights sum to 1
    vectors: torch.Tensor    # [n, 4, d] quantized embedding of each group
    missing: list[str | None]

    def __len__(self) -> int:
        return len(self.code_ids)

    def to_frame(self):
        import pandas as pd

        n = len(self)
        return pd.DataFrame({
            "code_id": self.code_ids,
            "missing": self.missing,
            "ids": list(self.ids.reshape(n, -1).numpy()),
            "weights": list(self.weights.reshape(n, -1).numpy()),
            "vectors": list(self.vectors.reshape(n, -1).numpy()),
        })

    def save(self, path: str | Path) -> Path:
        """Write `.parquet` (one row per code, flattened group-major arrays) or `.npz` (arrays as shaped)."""
        path = Path(path)
        if path.suffix not in (".parquet", ".npz"):
            raise ValueError(f"export format from suffix: .parquet or .npz, got {path.name!r}")
        with atomic_path(path) as tmp:
            if path.suffix == ".parquet":
                self.to_frame().to_parquet(tmp, index=False)
            else:
                with open(tmp, "wb") as f:
                    np.savez(f, code_ids=np.array(self.code_ids), ids=self.ids.numpy(), weights=self.weights.numpy(),
                             vectors=self.vectors.numpy(), missing=np.array([m or "" for m in self.missing]),
                             groups=np.array(GROUPS))
        return path


class MedTokTokenizer:
    def __init__(self, model: MedTokModel, vocab, graph, node_features: torch.Tensor, vocab_dir: str | None = None,
                 heldout_fraction: float = 0.05, device: str | torch.device | None = None,
                 heldout_codes: list[str] | None = None, drop_edge_types: list | None = None,
                 drop_edges_touching: list[str] | None = None, reference_graph=None):
        """`graph` is the graph tokens are computed on (already edited when the model was trained on an
        edited graph; `drop_edge_types` / `drop_edges_touching` only record that edit), and
        `reference_graph` the unedited one (default `graph`)."""
        self.model = model.eval()
        if device is not None:
            self.model.to(device)
        self.heldout_fraction = heldout_fraction  # of the training run; for the unseen-code evaluation
        self.heldout_codes = read_code_list(heldout_codes)
        self.drop_edge_types = normalize_edge_specs(drop_edge_types)
        self.drop_edges_touching = read_code_list(drop_edges_touching)
        self.vocab, self.graph, self.x = vocab, graph, node_features  # node features stay on the CPU
        self.reference_graph = graph if reference_graph is None else reference_graph
        self.vocab_dir = vocab_dir
        self.systems: list[str] | None = None  # code systems the checkpoint was trained on (None = all)
        self._table: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._table_cache: Path | None = None  # set by from_pretrained
        self._table_key: str | None = None
        desc = vocab.codes["description"].fillna("").astype(str).str.strip().to_numpy()
        self._no_text = desc == ""
        self._no_graph = graph.degree() == 0 if model.config.modalities != "text" else np.ones(len(vocab), bool)
        if model.config.modalities == "graph":
            self._no_text[:] = True

    @property
    def device(self) -> torch.device:
        return self.model.quantizer.codebook.device

    # ---- construction ------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, ckpt_dir: str | Path, vocab_dir: str | Path | None = None, vocab=None, graph=None,
                        text_embeddings: np.ndarray | None = None, progress: bool = True,
                        device: str | torch.device | None = None, cache_table: bool = True) -> "MedTokTokenizer":
        """Load a checkpoint (verified; `medtok.checkpoint.CheckpointError` if damaged) with its
        vocabulary; `device` is where the model runs (None = CPU). `cache_table=False`: never read or
        write `token_table.npz` (the table is computed on `device` on first use)."""
        ckpt_dir = Path(ckpt_dir)
        model = MedTokModel.from_pretrained(ckpt_dir, device=device)
        rec = TokenizerConfig.from_checkpoint(ckpt_dir)
        if vocab is None:
            vocab_dir = vocab_dir or rec.vocab_dir or default_vocab_dir()
            vocab, graph = load_vocabulary(vocab_dir, rec.systems)
        edited = rec.edit_graph(vocab, graph)  # the graph the checkpoint was trained on
        x = node_features(vocab, edited, model.config, text_embeddings, progress=progress)
        tok = cls(model, vocab, edited, x, str(vocab_dir) if vocab_dir else None, rec.heldout_fraction,
                  heldout_codes=rec.heldout_codes, drop_edge_types=rec.drop_edge_types,
                  drop_edges_touching=rec.drop_edges_touching, reference_graph=graph)
        tok.systems = rec.systems
        if cache_table:
            tok._table_cache = ckpt_dir / TOKEN_TABLE
            tok._table_key = table_key(model, x, edited, vocab)
        return tok

    def config(self) -> TokenizerConfig:
        return TokenizerConfig(vocab_dir=self.vocab_dir, systems=self.systems, heldout_fraction=self.heldout_fraction,
                               heldout_codes=self.heldout_codes, drop_edge_types=self.drop_edge_types,
                               drop_edges_touching=self.drop_edges_touching)

    def with_model(self, model: MedTokModel) -> "MedTokTokenizer":
        """A tokenizer over the same vocabulary, graphs, node features and held-out record with another
        model (e.g. an untrained one of the same configuration); its table is computed, never cached."""
        tok = type(self)(model, self.vocab, self.graph, self.x, self.vocab_dir, self.heldout_fraction,
                         heldout_codes=self.heldout_codes, drop_edge_types=self.drop_edge_types,
                         drop_edges_touching=self.drop_edges_touching, reference_graph=self.reference_graph)
        tok.systems = self.systems
        return tok

    def heldout_mask(self) -> np.ndarray:
        """Rows the training run never used as centres: its hashed fraction plus its explicit list."""
        codes = self.vocab.codes
        return heldout_mask(codes["code_id"], codes["kind"], self.heldout_fraction, self.heldout_codes)

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        self.model.save_pretrained(directory)
        self.config().save(directory / TOKENIZER_CONFIG)

    # ---- properties ---------------------------------------------------------------------
    @property
    def embedding_dim(self) -> int:
        return self.model.config.embed_dim

    @property
    def vocab_size(self) -> int:
        return self.model.config.codebook_size

    @property
    def tokens_per_code(self) -> int:
        return 4 * self.model.config.top_k

    def codebook(self) -> torch.Tensor:
        """[vocab_size, d] token vectors (row = token id), as used for quantization (on the CPU)."""
        with torch.no_grad():
            return self.model.quantizer.entries().detach().cpu().clone()

    # ---- the token table -----------------------------------------------------------------
    def _graph_inputs(self):
        """Edge index (both directions) and attention key table of the whole vocabulary, on the CPU."""
        c = self.model.config
        if c.modalities == "text":
            ei = torch.empty(2, 0, dtype=torch.long, device="cpu")
        else:
            ei = torch.from_numpy(np.stack([np.concatenate([self.graph.src, self.graph.dst]),
                                            np.concatenate([self.graph.dst, self.graph.src])]))
        e = ei.numpy()
        keys = torch.from_numpy(neighbor_table(e[0], e[1], len(self.vocab), c.max_neighbors))
        return ei, keys

    def _load_table(self):
        """The cached table when it parses, matches the key and passes the shape/range checks; else None."""
        path = self._table_cache
        try:
            with np.load(path) as z:  # reading the members checks their zip CRC
                key, ids, w = str(z["key"]), z["ids"], z["weights"]
        except Exception as e:  # truncated / damaged / not an npz
            log.warning("token table %s is unreadable (%s: %s): recomputing it", path, type(e).__name__, e)
            return None
        if key != self._table_key:
            log.info("token table %s belongs to another model, graph or feature set: recomputing it", path)
            return None
        c = self.model.config
        shape = (len(self.vocab), 4, c.top_k)
        problem = None
        if ids.shape != shape or w.shape != shape:
            problem = f"shapes {ids.shape} / {w.shape}, expected {shape}"
        elif not np.isfinite(w).all() or not np.allclose(w.sum(-1), 1.0, atol=1e-3):
            problem = "weights are not finite distributions"
        else:
            regions = c.regions()
            for j, g in enumerate(GROUPS):
                lo, hi = regions[GROUP_REGION[g]]
                if ids[:, j].min(initial=lo) < lo or ids[:, j].max(initial=lo) >= hi:
                    problem = f"{g} ids outside [{lo}, {hi})"
                    break
        if problem:
            log.warning("token table %s is damaged (%s): recomputing it", path, problem)
            return None
        ids_t, w_t = torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(w.astype(np.float32))
        with torch.no_grad():  # vectors are a function of the tokens: rebuilt instead of stored
            vectors = self.model.quantizer.get_output_from_indices(ids_t, w_t).cpu()
        return ids_t, w_t, vectors

    def _save_table(self) -> None:
        ids, w, _ = self._table
        try:
            with atomic_path(self._table_cache) as tmp, open(tmp, "wb") as f:
                np.savez(f, key=np.array(self._table_key), ids=ids.numpy().astype(np.int32), weights=w.numpy())
        except OSError as e:  # read-only checkpoint: just recompute next time
            log.info("token table not cached (%s)", e)

    def token_table(self, batch_size: int = 1024, progress: bool = False):
        """(ids, weights, vectors) of every vocabulary row, on the CPU; computed once (one full-graph
        GNN pass on the tokenizer's device), then read from the checkpoint's cache."""
        if self._table is None and self._table_cache is not None and self._table_cache.exists():
            self._table = self._load_table()
        if self._table is None:
            if (self._no_text & self._no_graph).any():
                bad = self.vocab.codes["code_id"][self._no_text & self._no_graph].head(3).tolist()
                # such rows still get (meaningless) tokens; flag them loudly instead of failing the whole table
                log.warning("%d codes have neither a description nor graph edges, e.g. %s",
                            int((self._no_text & self._no_graph).sum()), bad)
            ei, keys = self._graph_inputs()
            self._table = self.model.tokenize_graph(self.x, ei, keys, batch_size=batch_size, progress=progress)
            if self._table_cache is not None:
                self._save_table()
        return self._table

    # ---- encoding ----------------------------------------------------------------------
    def _missing(self, row: int) -> str | None:
        if self._no_text[row] and self._no_graph[row]:
            return "text+graph"
        return "text" if self._no_text[row] else "graph" if self._no_graph[row] else None

    def encode_rows(self, rows: np.ndarray) -> MedTokEncoding:
        ids, w, v = self.token_table()
        r = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        cids = self.vocab.codes["code_id"].to_numpy()[np.asarray(rows)]
        return MedTokEncoding(list(cids), ids[r], w[r], v[r], [self._missing(int(i)) for i in rows])

    def encode(self, codes: list[str] | str) -> MedTokEncoding:
        """Tokens of `codes` (any spelling `Vocabulary.normalize` accepts); UnknownCodeError if unresolvable."""
        if isinstance(codes, str):
            codes = [codes]
        rows = np.array([self.vocab.index_of(c) for c in codes], dtype=np.int64)
        return self.encode_rows(rows)

    def encode_all(self, batch_size: int = 1024, progress: bool = True) -> MedTokEncoding:
        self.token_table(batch_size=batch_size, progress=progress)
        return self.encode_rows(np.arange(len(self.vocab)))

    def export(self, codes: list[str] | None, path: str | Path) -> Path:
        """Token ids, weights and vectors of `codes` (None = whole vocabulary) as .parquet or .npz."""
        enc = self.encode_all(progress=False) if codes is None else self.encode(codes)
        return enc.save(path)

    def benchmark_encode_all(self, batch_size: int = 1024) -> dict:
        """Whole-vocabulary tokenization speed from the (already computed) node features."""
        self._table, cache = None, self._table_cache
        self._table_cache = None  # time the computation, not the on-disk table
        try:
            t0 = time.perf_counter()
            self.token_table(batch_size=batch_size)
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
        finally:
            self._table_cache = cache
        return {"codes": len(self.vocab), "seconds": dt, "codes_per_s": len(self.vocab) / dt,
                "threads": torch.get_num_threads(), "device": str(self.device)}


def export_codes(ckpt: str | Path, path: str | Path, codes: list[str] | None = None,
                 vocab_dir: str | Path | None = None, device: str | None = None) -> Path:
    """`scripts/eval_medtok.py --export`: tokens of `codes` (None = all) of a checkpoint to .parquet / .npz."""
    return MedTokTokenizer.from_pretrained(ckpt, vocab_dir, device=device).export(codes, path)
