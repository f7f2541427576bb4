"""MedTokTokenizer: medical codes -> MedTok tokens (ids, weights, quantized vectors).

    tok = MedTokTokenizer.from_pretrained("runs/medtok")      # vocab from the checkpoint's record
    enc = tok.encode(["E11.9", "ICD9CM:4280"])                  # any accepted spelling
    enc.ids [n, 4, K], enc.weights [n, 4, K], enc.vectors [n, 4, d], enc.missing

Groups (axis 1): text_specific, graph_specific, shared_text, shared_graph. Token ids are
global rows of the one codebook (0 <= id < vocab_size).

Every code of the vocabulary is tokenized by one full-graph pass (computed on first use,
stored as `token_table.npz` beside the checkpoint, then looked up), so codes held out of training get tokens from their own description and
graph neighbourhood like any other. A code without a description is tokenized from its
neighbours' descriptions + graph (missing="text"); a code without edges from its text
alone (missing="graph"). Codes that cannot be resolved raise `UnknownCodeError`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medtok.model.config import GROUPS
from medtok.model.features import neighbor_table
from medtok.model.medtok import MedTokModel

TOKENIZER_CONFIG = "tokenizer_config.json"
TOKEN_TABLE = "token_table.npz"  # whole-vocabulary tokens, written beside the checkpoint on first use


def _fingerprint(weights: Path, vocab) -> str:
    """Identity of (checkpoint weights, vocabulary rows) for the on-disk token table."""
    import hashlib

    h = hashlib.sha1(weights.read_bytes())
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
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".parquet":
            self.to_frame().to_parquet(path, index=False)
        elif path.suffix == ".npz":
            np.savez(path, code_ids=np.array(self.code_ids), ids=self.ids.numpy(), weights=self.weights.numpy(),
                     vectors=self.vectors.numpy(), missing=np.array([m or "" for m in self.missing]),
                     groups=np.array(GROUPS))
        else:
            raise ValueError(f"export format from suffix: .parquet or .npz, got {path.name!r}")
        return path


class MedTokTokenizer:
    def __init__(self, model: MedTokModel, vocab, graph, node_features: torch.Tensor, vocab_dir: str | None = None,
                 heldout_fraction: float = 0.05):
        self.model = model.eval()
        self.heldout_fraction = heldout_fraction  # of the training run; for the unseen-code evaluation
        self.vocab, self.graph, self.x = vocab, graph, node_features
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

    # ---- construction ------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, ckpt_dir: str | Path, vocab_dir: str | Path | None = None, vocab=None, graph=None,
                        text_embeddings: np.ndarray | None = None, progress: bool = True) -> "MedTokTokenizer":
        from medtok.paths import default_vocab_dir
        from medtok.train import load_vocabulary, node_features

        ckpt_dir = Path(ckpt_dir)
        model = MedTokModel.from_pretrained(ckpt_dir)
        rec = {}
        for name in ("train_config.json", TOKENIZER_CONFIG):
            if (ckpt_dir / name).exists():
                rec.update(json.loads((ckpt_dir / name).read_text()))
        if vocab is None:
            vocab_dir = vocab_dir or rec.get("vocab_dir") or default_vocab_dir()
            vocab, graph = load_vocabulary(vocab_dir, rec.get("systems"))
        x = node_features(vocab, graph, model.config, text_embeddings, progress=progress)
        tok = cls(model, vocab, graph, x, str(vocab_dir) if vocab_dir else None,
                  float(rec.get("heldout_fraction", 0.05)))
        tok.systems = rec.get("systems")
        tok._table_cache = ckpt_dir / TOKEN_TABLE
        tok._table_key = _fingerprint(ckpt_dir / "model.safetensors", vocab)
        return tok

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        self.model.save_pretrained(directory)
        (directory / TOKENIZER_CONFIG).write_text(json.dumps({"vocab_dir": self.vocab_dir, "heldout_fraction": self.heldout_fraction,
                                                          "systems": self.systems}, indent=1))

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
        """[vocab_size, d] token vectors (row = token id), as used for quantization."""
        with torch.no_grad():
            return self.model.quantizer.entries().clone()

    # ---- encoding ----------------------------------------------------------------------
    def _graph_inputs(self):
        c = self.model.config
        if c.modalities == "text":
            ei = torch.empty(2, 0, dtype=torch.long)
        else:
            ei = torch.from_numpy(np.stack([np.concatenate([self.graph.src, self.graph.dst]),
                                            np.concatenate([self.graph.dst, self.graph.src])]))
        e = ei.numpy()
        keys = torch.from_numpy(neighbor_table(e[0], e[1], len(self.vocab), c.max_neighbors))
        return ei, keys

    def token_table(self, batch_size: int = 1024, progress: bool = False):
        """(ids, weights, vectors) of every vocabulary row; computed once (one full-graph GNN pass)."""
        if self._table is None and self._table_cache is not None and self._table_cache.exists():
            z = np.load(self._table_cache)
            if str(z["key"]) == self._table_key:
                ids, w = torch.from_numpy(z["ids"]).long(), torch.from_numpy(z["weights"])
                with torch.no_grad():  # vectors are a function of the tokens: rebuild instead of storing
                    self._table = (ids, w, self.model.quantizer.get_output_from_indices(ids, w))
        if self._table is None:
            if (self._no_text & self._no_graph).any():
                bad = self.vocab.codes["code_id"][self._no_text & self._no_graph].head(3).tolist()
                # such rows still get (meaningless) tokens; flag them loudly instead of failing the whole table
                print(f"warning: {int((self._no_text & self._no_graph).sum())} codes have neither a description "
                      f"nor graph edges, e.g. {bad}")
            ei, keys = self._graph_inputs()
            self._table = self.model.tokenize_graph(self.x, ei, keys, batch_size=batch_size, progress=progress)
            if self._table_cache is not None:
                try:
                    ids, w, v = self._table
                    tmp = self._table_cache.with_suffix(".tmp.npz")
                    np.savez(tmp, key=np.array(self._table_key), ids=ids.numpy().astype(np.int32), weights=w.numpy())
                    tmp.replace(self._table_cache)
                except OSError:  # read-only checkpoint: just recompute next time
                    pass
        return self._table

    def _missing(self, row: int) -> str | None:
        if self._no_text[row] and self._no_graph[row]:
            return "text+graph"
        return "text" if self._no_text[row] else "graph" if self._no_graph[row] else None

    def encode_rows(self, rows: np.ndarray) -> MedTokEncoding:
        ids, w, v = self.token_table()
        r = torch.as_tensor(np.asarray(rows, dtype=np.int64))
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
        t0 = time.perf_counter()
        self.token_table(batch_size=batch_size)
        dt = time.perf_counter() - t0
        self._table_cache = cache
        return {"codes": len(self.vocab), "seconds": dt, "codes_per_s": len(self.vocab) / dt,
                "threads": torch.get_num_threads()}
