from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from medtok.codes.vocabulary import COLUMNS


@dataclass
class SourceTable:
    """What a loader yields: `codes` (vocabulary columns) and `edges` (src_id, dst_id, type)."""

    name: str
    codes: pd.DataFrame
    edges: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["src_id", "dst_id", "type"]))
    skipped: int = 0  # malformed/unusable rows dropped by the loader

    def __post_init__(self):
        for col in COLUMNS:
            if col not in self.codes.columns:
                if col in ("parents", "synonyms"):
                    self.codes[col] = [[] for _ in range(len(self.codes))]
                elif col == "kind":
                    self.codes[col] = "code"
                else:
                    raise ValueError(f"{self.name}: code table lacks {col!r}")
        self.codes = self.codes[COLUMNS]


def rows_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS)


def package_file(package: str, *parts: str):
    """Path of a data file shipped inside an installed package, found without importing it
    (some of these packages import network clients at import time)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ImportError(f"package {package!r} is not installed (it is listed in pyproject.toml; run `make install`)")
    return Path(spec.origin).parent.joinpath(*parts)
