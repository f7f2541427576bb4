"""Checkpoint directories that are written atomically and verified before use.

A checkpoint is a directory of plain files -- weights in safetensors, configs and progress in
JSON, the optimizer state as tensors loadable with `torch.load(weights_only=True)` -- plus a
manifest `checkpoint.json` written *last*, listing every file with its size and sha256.

* `write_manifest(dir, names)` after the files are in place; every file itself is written
  through `medbase.atomic` (temporary file + rename), so a kill leaves old or new files,
  never a half-written one.
* `verify(dir)` -> None when every listed file is present with its recorded size and digest,
  else the reason. A kill between two files leaves an old manifest that no longer matches,
  so a half-saved checkpoint is never taken for a complete one.
* `staged_directory(target)` writes a whole directory under a temporary name and renames it
  into place (intermediate `checkpoint-<step>` directories).

Nothing here unpickles objects: torch files are read with `weights_only=True` only.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

import torch

from medbase.atomic import atomic_path, atomic_write_text
from medbase.hashing import file_digest

MANIFEST_NAME = "checkpoint.json"
MANIFEST_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete or damaged; the message says which file and why."""


def write_manifest(directory: str | Path, names: list[str], **info) -> None:
    directory = Path(directory)
    files = {n: {"bytes": (directory / n).stat().st_size, "sha256": file_digest(directory / n)} for n in names}
    atomic_write_text(directory / MANIFEST_NAME,
                      json.dumps({"version": MANIFEST_VERSION, "files": files, **info}, indent=1) + "\n")


def read_manifest(directory: str | Path) -> dict | None:
    p = Path(directory) / MANIFEST_NAME
    try:
        m = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) and isinstance(m.get("files"), dict) else None


def verify(directory: str | Path) -> str | None:
    """None if the checkpoint at `directory` is complete and undamaged, else the reason."""
    directory = Path(directory)
    if not (directory / MANIFEST_NAME).exists():
        return f"no {MANIFEST_NAME} in {directory} (incomplete or written by an older version)"
    m = read_manifest(directory)
    if m is None:
        return f"{directory / MANIFEST_NAME} is not a valid manifest"
    for name, rec in m["files"].items():
        p = directory / name
        if not p.exists():
            return f"{p} is missing"
        if p.stat().st_size != rec.get("bytes"):
            return f"{p} has {p.stat().st_size} bytes, the manifest says {rec.get('bytes')} (truncated?)"
        if file_digest(p) != rec.get("sha256"):
            return f"{p} does not match its recorded sha256 (damaged)"
    return None


@contextlib.contextmanager
def staged_directory(target: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces `target` in one rename."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        if target.exists():  # an older copy of the same step (a rerun after a resume)
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def save_tensors_pt(obj, path: str | Path) -> None:
    """torch.save through a temporary file (for state that `torch.load(weights_only=True)` reads back)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def load_tensors_pt(path: str | Path):
    """Tensors, numbers, strings, lists and dicts only; never arbitrary pickled objects."""
    return torch.load(path, map_location="cpu", weights_only=True)
