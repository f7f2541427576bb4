"""Frozen per-code vectors for the text and MedTok tokenizers, built once and cached.

- Text: the MiniLM description embedding of each vocabulary code (`medtok.model.text_encoder`
  cache, float16-exact), looked up for the codes a dataset uses.
- MedTok: a `MedTokTokenizer` checkpoint trained on the code systems the dataset uses
  (ICD9CM+ICD9PCS for MIMIC-III, ICD10CM+ICD10PCS for the synthetic cohort, all four where a
  dataset mixes them), one per variant (`MEDTOK_VARIANTS`: default, text-only, graph-only,
  a second codebook size). Each checkpoint is trained with `medtok.train.train` on first use
  under `cache_dir()/ehr_bench/medtok/<systems>/<variant>-s<steps>` and its whole-vocabulary
  tokens exported once to `ehr_vectors.npz` (code_ids, quantized vectors [n, 4, d], token ids
  and weights [n, 4, K]) keyed by the checkpoint's weight digest. Later runs only read the npz.

The vectors are the tokenizer's, frozen: the EHR model learns only a projection on top.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medbase.atomic import atomic_path
from medbase.hashing import file_digest
from medbase.paths import cache_dir
from medtok.loading import load_vocabulary
from medtok.model.config import MedTokConfig
from medtok.model.text_encoder import cached_text_embeddings
from medtok.tokenizer import MedTokTokenizer

log = logging.getLogger(__name__)

DX_PX_SYSTEMS = ("ICD9CM", "ICD9PCS", "ICD10CM", "ICD10PCS")
# variant -> MedTokConfig overrides (the paper's Fig. 4 modality ablation and Fig. 5A codebook size)
MEDTOK_VARIANTS: dict[str, dict] = {
    "both-n12000": {"modalities": "both", "codebook_size": 12000},
    "text-n12000": {"modalities": "text", "codebook_size": 12000},
    "graph-n12000": {"modalities": "graph", "codebook_size": 12000},
    "both-n3000": {"modalities": "both", "codebook_size": 3000},
}
DEFAULT_MEDTOK_STEPS = 600      # as the QA job's own MedTok (600 steps x 256 codes)
EXPORT_NAME = "ehr_vectors.npz"


@dataclass
class CodeVectors:
    """Frozen vectors of some vocabulary codes. `vectors` [n, G, d] (G = 1 for text, 4 MedTok
    groups); `ids`/`weights` [n, 4, K] for MedTok (None for text)."""

    code_ids: np.ndarray
    vectors: np.ndarray
    ids: np.ndarray | None = None
    weights: np.ndarray | None = None
    source: str = ""

    def index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.code_ids.tolist())}

    def take(self, codes: list[str]) -> tuple["CodeVectors", np.ndarray]:
        """Rows for `codes` (a dataset's code list); the bool mask says which were found (a code
        outside these systems is not, and the tokenizer treats it as unseen)."""
        idx = self.index()
        rows = np.array([idx.get(c, -1) for c in codes], dtype=np.int64)
        found = rows >= 0
        r = np.where(found, rows, 0)
        sub = CodeVectors(np.asarray(codes, dtype=object), self.vectors[r],
                          None if self.ids is None else self.ids[r],
                          None if self.weights is None else self.weights[r], self.source)
        sub.vectors = np.where(found[:, None, None], sub.vectors, 0).astype(np.float32)
        return sub, found


def systems_in(codes) -> list[str]:
    """The diagnosis/procedure vocabulary systems a dataset's codes use (sorted, stable)."""
    present = {str(c).split(":", 1)[0] for c in codes if ":" in str(c)}
    return [s for s in DX_PX_SYSTEMS if s in present]


def medtok_dir(systems: list[str], variant: str, steps: int = DEFAULT_MEDTOK_STEPS, root: str | Path | None = None,
               device: str = "cpu") -> Path:
    """The checkpoint's directory; one trained on a GPU (other kernels, not bitwise the CPU one) gets
    its own ("-cuda" suffix), so the two never share a cache entry."""
    base = Path(root) if root else cache_dir() / "ehr_bench" / "medtok"
    suffix = "" if str(device).startswith("cpu") else "-cuda"
    return base / "+".join(sorted(systems)) / f"{variant}-s{steps}{suffix}"


def build_medtok(systems: list[str], variant: str = "both-n12000", steps: int = DEFAULT_MEDTOK_STEPS,
                 root: str | Path | None = None, progress: bool = True, vocab_dir: str | None = None,
                 device: str = "cpu", threads: int | None = None, vocab=None, graph=None, text_embeddings=None,
                 model_overrides: dict | None = None, train_overrides: dict | None = None) -> Path:
    """Train (first use) a MedTok checkpoint on `systems` for `variant`; returns its directory.

    The one MedTok training path (`medtok.train.train`, as `make demo` and the prefix experiment):
    on the CPU under PyTorch's deterministic kernels (`medbase.determinism`), `threads` torch
    threads (None: the caller's setting); the count used is recorded in the checkpoint's
    metrics.json, since results depend on it. `device`: "cpu" (default), "cuda", "cuda:N".
    `vocab`/`graph`/`text_embeddings`/`*_overrides`: tests (the toy vocabulary, a tiny model)."""
    from medtok.train import TrainConfig, checkpoint_step, train  # training code only to build

    if variant not in MEDTOK_VARIANTS:
        raise KeyError(f"unknown MedTok variant {variant!r}; known: {sorted(MEDTOK_VARIANTS)}")
    out = medtok_dir(systems, variant, steps, root, device)
    if checkpoint_step(out) == steps:   # complete and verified: reuse
        return out
    log.info("training MedTok %s on %s (%d steps, %s) -> %s", variant, systems, steps, device, out)
    tkw = dict(vocab_dir=vocab_dir, systems=sorted(systems), out_dir=str(out), steps=steps,
               save_every=max(100, steps // 3), seed=0, device=device, threads=threads)
    tkw.update(train_overrides or {})
    tcfg = TrainConfig(**tkw)
    mcfg = MedTokConfig(**{**MEDTOK_VARIANTS[variant], **(model_overrides or {})})
    train(tcfg, mcfg, resume_from="latest", progress=progress, vocab=vocab, graph=graph,
          text_embeddings=text_embeddings)
    return out


def find_medtok(systems: list[str], variant: str, steps: int = DEFAULT_MEDTOK_STEPS,
                root: str | Path | None = None) -> Path | None:
    """A finished checkpoint for exactly `systems`, else the smallest finished one trained on a
    superset of them (e.g. ICD9CM+ICD9PCS+ICD10CM serves an ICD9CM+ICD10CM dataset and a
    MIMIC-III -> eICU transfer); None when there is none."""
    from medtok.train import TrainConfig, checkpoint_step, train  # training code only to build

    exact = medtok_dir(systems, variant, steps, root)
    if checkpoint_step(exact) == steps:
        return exact
    base = exact.parent.parent
    best = None
    for d in base.glob(f"*/{variant}-s{steps}") if base.exists() else []:
        have = set(d.parent.name.split("+"))
        if set(systems) <= have and checkpoint_step(d) == steps and (best is None or len(have) < len(best[0])):
            best = (have, d)
    return best[1] if best else None


def medtok_vectors(systems: list[str], variant: str = "both-n12000", steps: int = DEFAULT_MEDTOK_STEPS,
                   root: str | Path | None = None, progress: bool = True, build: bool = True,
                   device: str = "cpu") -> CodeVectors:
    """Whole-vocabulary MedTok tokens of a (cached) checkpoint trained on `systems` (or a superset,
    `find_medtok`); trains the exact one on first use if `build`. `device`: where the checkpoint is
    trained (when built here) and the vocabulary tokenized; the vectors come back on the CPU."""
    ckpt = find_medtok(systems, variant, steps, root) if str(device).startswith("cpu") else None
    if ckpt is None and not str(device).startswith("cpu"):
        d = medtok_dir(systems, variant, steps, root, device)
        from medtok.train import checkpoint_step  # training code only to check a checkpoint

        ckpt = d if checkpoint_step(d) == steps else None
    if ckpt is None and build:
        ckpt = build_medtok(systems, variant, steps, root, progress, device=device)
    elif ckpt is None:
        raise FileNotFoundError(f"no MedTok checkpoint for {systems} ({variant}) under "
                                f"{medtok_dir(systems, variant, steps, root).parent.parent}; run `python "
                                f"scripts/ehr_benchmark.py --build-medtok --systems {' '.join(systems)}`")
    source = f"medtok:{ckpt.parent.name}/{ckpt.name}"
    path, key = ckpt / EXPORT_NAME, file_digest(ckpt / "model.safetensors")
    if path.exists():
        try:
            z = np.load(path, allow_pickle=False)
            if str(z["key"]) == key:
                return CodeVectors(z["code_ids"].astype(object), z["vectors"].astype(np.float32), z["ids"].astype(np.int64),
                                   z["weights"].astype(np.float32), source)
        except (OSError, KeyError, ValueError):
            log.warning("unreadable %s: recomputing", path)

    enc = MedTokTokenizer.from_pretrained(ckpt, progress=progress, device=device).encode_all(progress=progress)
    cv = CodeVectors(np.asarray(enc.code_ids, dtype=object), enc.vectors.numpy().astype(np.float32),
                     enc.ids.numpy().astype(np.int64), enc.weights.numpy().astype(np.float32), source)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, key=np.array(key), code_ids=np.array(enc.code_ids, dtype=str),
                     vectors=cv.vectors.astype(np.float16), ids=cv.ids.astype(np.int32), weights=cv.weights.astype(np.float16))
    return cv


def text_vectors(code_ids: list[str], vocab=None, progress: bool = True) -> tuple[CodeVectors, np.ndarray]:
    """MiniLM description embeddings [n, 1, 384] of the vocabulary codes among `code_ids`
    (others: zeros, found=False). Uses the project's text-embedding cache."""

    if vocab is None:

        vocab, _ = load_vocabulary()
    idx = vocab._index  # code_id -> row (exact ids: the converters already wrote canonical ids)
    rows = np.array([idx.get(c, -1) for c in code_ids], dtype=np.int64)
    found = rows >= 0
    desc = vocab.codes["description"].to_numpy()
    texts = [str(desc[r]) for r in rows[found]]
    out = np.zeros((len(code_ids), 1, 384), dtype=np.float32)
    if texts:
        emb = cached_text_embeddings(texts, progress=progress)
        out = np.zeros((len(code_ids), 1, emb.shape[1]), dtype=np.float32)
        out[found, 0] = emb
    return CodeVectors(np.asarray(code_ids, dtype=object), out, source="text:minilm"), found
