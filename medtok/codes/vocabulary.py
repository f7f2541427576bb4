"""The unified code table: one row per code (or grouping/concept node).

Columns of `codes.parquet` (row order = graph node index):
    code_id      str        canonical id "SYSTEM:CODE", e.g. "ICD10CM:E11.9"
    system       str        "ICD10CM", "ICD9CM", "ICD9PCS", "ICD10PCS", "ATC", "CCS", "CCSR", ...
    code         str        the code without its system prefix, canonical spelling
    description  str        non-empty text
    parents      list[str]  code_ids of the parents (empty only for roots)
    synonyms     list[str]  inclusion terms / other names the source gives
    kind         str        "code" (assignable), "group" (chapter/block/category node) or "concept"
"""

from __future__ import annotations

import bisect
import difflib
from pathlib import Path

import numpy as np
import pandas as pd

from medbase.atomic import atomic_path
from medtok.codes.normalize import canonical_system, make_code_id, normalize_code, split_code_id

COLUMNS = ["code_id", "system", "code", "description", "parents", "synonyms", "kind"]
# bare codes (no system prefix) are tried in this order
BARE_CODE_ORDER = ["ICD10CM", "ICD9CM", "ICD10PCS", "ICD9PCS", "ATC"]


class UnknownCodeError(KeyError):
    """A code that is malformed or not in the vocabulary; the message names the nearest valid codes."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class Vocabulary:
    """Lookup over the code table: normalisation, index, descriptions."""

    def __init__(self, codes: pd.DataFrame):
        missing = [c for c in COLUMNS if c not in codes.columns]
        if missing:
            raise ValueError(f"code table lacks columns {missing}")
        self.codes = codes.reset_index(drop=True)
        ids = self.codes["code_id"].to_numpy()
        if len(set(ids)) != len(ids):
            dup = self.codes["code_id"][self.codes["code_id"].duplicated()].head(5).tolist()
            raise ValueError(f"duplicate code_ids, e.g. {dup}")
        self._index = {cid: i for i, cid in enumerate(ids)}
        self._sorted_by_system: dict[str, list[str]] = {}

    # ---- persistence -------------------------------------------------
    @classmethod
    def load(cls, directory: str | Path) -> "Vocabulary":
        df = pd.read_parquet(Path(directory) / "codes.parquet")
        for col in ("parents", "synonyms"):
            df[col] = df[col].map(lambda v: list(v) if v is not None else [])
        return cls(df)

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "codes.parquet"
        with atomic_path(path) as tmp:  # a killed build never leaves a truncated table
            self.codes[COLUMNS].to_parquet(tmp, index=False)
        return path

    # ---- lookup -------------------------------------------------------
    def __len__(self) -> int:
        return len(self.codes)

    def __contains__(self, code: str) -> bool:
        try:
            self.normalize(code)
            return True
        except UnknownCodeError:
            return False

    @property
    def systems(self) -> list[str]:
        return sorted(self.codes["system"].unique())

    def normalize(self, code: str, system: str | None = None) -> str:
        """Canonical code_id of `code`; raises UnknownCodeError naming the nearest codes."""
        if system is None and code in self._index:
            # stored ids are canonical already; this also resolves rows the package data ships
            # outside their system's spelling rules (ICD-10-CM "QA0.0101"), which no rule accepts
            return code
        sys_in_id, raw = split_code_id(code)
        system = canonical_system(system) if system else sys_in_id
        if system is not None:
            norm = normalize_code(raw, system)
            cid = make_code_id(system, norm) if norm else None
            if cid in self._index:
                return cid
            as_is = make_code_id(system, str(raw).strip().upper())
            if norm is None and as_is in self._index:  # such a row, spelled as stored
                return as_is
            self._raise_unknown(raw, system, malformed=norm is None)
        for candidate in BARE_CODE_ORDER + [s for s in self.systems if s not in BARE_CODE_ORDER]:
            norm = normalize_code(raw, candidate)
            if norm and make_code_id(candidate, norm) in self._index:
                return make_code_id(candidate, norm)
        raise UnknownCodeError(
            f"unknown code {code!r}: not found in any system ({', '.join(self.systems)}); "
            "prefix it with its system, e.g. 'ICD10CM:E11.9'"
        )

    def index_of(self, code: str, system: str | None = None) -> int:
        return self._index[self.normalize(code, system)]

    def indices_of(self, codes: list[str]) -> np.ndarray:
        return np.array([self.index_of(c) for c in codes], dtype=np.int64)

    def row(self, code: str) -> pd.Series:
        return self.codes.iloc[self.index_of(code)]

    def description(self, code: str) -> str:
        return self.row(code)["description"]

    def nearest(self, raw: str, system: str, n: int = 5) -> list[str]:
        """Valid codes of `system` spelled most like `raw` (shared prefix first, then edit similarity)."""
        if system not in self._sorted_by_system:
            self._sorted_by_system[system] = sorted(self.codes.loc[self.codes["system"] == system, "code"])
        pool = self._sorted_by_system[system]
        key = raw.strip().upper().replace(".", "")
        undotted = [c.replace(".", "") for c in pool]
        # codes sharing the longest prefix are the natural neighbours in a hierarchical code
        for plen in range(len(key), 0, -1):
            lo = bisect.bisect_left(undotted, key[:plen])
            hits = [pool[i] for i in range(lo, min(lo + 200, len(pool))) if undotted[i].startswith(key[:plen])]
            if hits:
                return [make_code_id(system, c) for c in difflib.get_close_matches(key, hits, n=n, cutoff=0) or hits[:n]]
        return [make_code_id(system, c) for c in difflib.get_close_matches(key, pool[:5000], n=n, cutoff=0)]

    def _raise_unknown(self, raw: str, system: str, malformed: bool) -> None:
        if system not in self.systems:
            raise UnknownCodeError(f"unknown system {system!r}; known: {', '.join(self.systems)}")
        what = "malformed" if malformed else "unknown"
        near = self.nearest(raw, system)
        raise UnknownCodeError(f"{what} {system} code {raw!r}; nearest valid codes: {', '.join(near)}")

    # ---- structure ----------------------------------------------------
    def children_map(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for cid, parents in zip(self.codes["code_id"], self.codes["parents"]):
            for p in parents:
                out.setdefault(p, []).append(cid)
        return out

    def siblings(self, code: str) -> list[str]:
        """Codes sharing a parent with `code` (excluding itself)."""
        cid = self.normalize(code)
        parents = set(self.row(cid)["parents"])
        mask = self.codes["parents"].map(lambda ps: bool(parents.intersection(ps)))
        return [c for c in self.codes.loc[mask, "code_id"] if c != cid]
