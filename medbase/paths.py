"""Where things live: the shared real data, the project's build outputs and caches."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA_ENV = "MEDTOK_SHARED_DATA"
CACHE_ENV = "MEDTOK_CACHE"


def shared_data_dir() -> Path:
    """Root of the shared real data (`$MEDTOK_SHARED_DATA`, default `../shared/data`).

    The directory may be absent (e.g. a user's machine); callers check `.exists()`.
    """
    env = os.environ.get(SHARED_DATA_ENV)
    return Path(env) if env else PROJECT_ROOT.parent / "shared" / "data"


def shared_data_path(*parts: str) -> Path | None:
    """Path under the shared data root, or None when it does not exist."""
    p = shared_data_dir().joinpath(*parts)
    return p if p.exists() else None


def cache_dir() -> Path:
    """Root for build outputs and caches (`$MEDTOK_CACHE`, default `data/cache`); git-ignored."""
    env = os.environ.get(CACHE_ENV)
    p = Path(env) if env else PROJECT_ROOT / "data" / "cache"
    p.mkdir(parents=True, exist_ok=True)
    return p


def default_vocab_dir() -> Path:
    return cache_dir() / "vocab"
