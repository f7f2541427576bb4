"""What every results.json records so that a run can be reproduced (`provenance`): library
versions, the git commit, thread count and environment, seeds, and sha256 fingerprints of the
vocabulary, checkpoints, data and questions the run used; and atomic results files."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
from pathlib import Path

import torch

from medbase.atomic import atomic_write_text
from medbase.hashing import file_digest
from medbase.paths import PROJECT_ROOT

LIBRARIES = ("torch", "transformers", "peft", "accelerate", "numpy", "tokenizers", "safetensors",
             "torch-geometric", "sentence-transformers")
ENV_VARS = ("PYTHONHASHSEED", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "MEDTOK_CACHE",
            "MEDTOK_SHARED_DATA")


# ---- results files ------------------------------------------------------------------------
def save_results(results: dict, path: str | Path) -> Path:
    """Write a results dict as JSON atomically (a killed run never leaves half a file)."""
    path = Path(path)
    atomic_write_text(path, json.dumps(results, indent=1, default=float))
    return path


def load_results(path: str | Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


# ---- provenance -----------------------------------------------------------------------------
def library_versions() -> dict[str, str | None]:
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> str | None:
    """The project's commit (with "+dirty" when tracked files differ), or None outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                              timeout=10)
        if head.returncode:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def files_fingerprint(paths: list[str | Path], root: str | Path | None = None) -> str:
    """sha256 over the (relative name, sha256 of the bytes) of each file, in the given order."""
    h = hashlib.sha256()
    for p in paths:
        p = Path(p)
        name = str(p.relative_to(root)) if root else p.name
        h.update(f"{name}\0{file_digest(p)}\n".encode())
    return h.hexdigest()


def vocabulary_fingerprint(vocab_dir: str | Path) -> str | None:
    """The built vocabulary's code table and graph files (None when it is not there)."""
    d = Path(vocab_dir)
    if not (d / "codes.parquet").exists():
        return None
    files = [d / "codes.parquet"] + sorted((d / "graph").glob("*"))
    return files_fingerprint([f for f in files if f.is_file()], d)


def vocabulary_content_fingerprint(vocab) -> str:
    """sha256 of a vocabulary's content (code ids, descriptions, parents, in row order), for a
    vocabulary handed over in memory rather than read from a built directory."""
    h = hashlib.sha256()
    codes = vocab.codes
    for cid, desc, parents in zip(codes["code_id"], codes["description"], codes["parents"]):
        h.update(f"{cid}\t{desc}\t{'|'.join(parents)}\n".encode())
    return h.hexdigest()


def checkpoint_fingerprint(directory: str | Path, names: tuple[str, ...] = ("config.json", "model.safetensors")) -> str | None:
    """A checkpoint's weights and config files (None when the directory is not there)."""
    d = Path(directory)
    files = [d / n for n in names if (d / n).is_file()]
    return files_fingerprint(files, d) if files else None


def questions_fingerprint(questions) -> str:
    """sha256 of the questions as scored: ids, stems, options, answers, splits and codes, in order."""
    h = hashlib.sha256()
    for q in questions:
        h.update(json.dumps([q.id, q.question, list(q.options), int(q.answer), q.split, list(q.codes)],
                            ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def provenance(*, seeds: dict, fingerprints: dict, device: str | None = None) -> dict:
    """What reproduces a run: versions, threads, environment, seeds, input fingerprints."""
    return {
        "versions": library_versions(),
        "git_commit": git_commit(),
        "platform": platform.platform(),
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "env": {k: os.environ.get(k) for k in ENV_VARS},
        "seeds": dict(seeds),
        "fingerprints": dict(fingerprints),
    }
