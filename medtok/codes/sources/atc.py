"""ATC drug classes: the 4.8k-code table shipped in `ontoloviz` (default, offline), or a full
WHO ATC file passed by path (columns `atc_code, atc_name`; e.g. the shared
`codes/atc/WHO_ATC-DDD_*.csv`, non-commercial licence: evaluation only)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medtok.codes.normalize import normalize_atc
from medtok.codes.sources.base import SourceTable, package_file, rows_frame

SYSTEM = "ATC"
_PARENT_LEN = {3: 1, 4: 3, 5: 4, 7: 5}


def atc_parent(code: str) -> str | None:
    n = _PARENT_LEN.get(len(code))
    return code[:n] if n else None


def _table(pairs) -> SourceTable:
    names: dict[str, str] = {}
    skipped = 0
    for raw, name in pairs:
        code = normalize_atc(str(raw)) if isinstance(raw, str) else None
        if code is None or not isinstance(name, str) or not name.strip():
            skipped += 1
            continue
        names.setdefault(code, name.strip())
    rows = []
    for code, name in names.items():
        parent = atc_parent(code)
        while parent and parent not in names:  # skip levels the table lacks
            parent = atc_parent(parent)
        rows.append(dict(code_id=f"{SYSTEM}:{code}", system=SYSTEM, code=code,
                         description=name[0].upper() + name[1:],
                         parents=[f"{SYSTEM}:{parent}"] if parent else [], synonyms=[],
                         kind="code" if len(code) == 7 else "group"))
    return SourceTable(SYSTEM, rows_frame(rows), skipped=skipped)


def load_atc(path: str | Path | None = None) -> SourceTable:
    if path is not None:
        df = pd.read_csv(path, dtype=str)
        return _table(zip(df["atc_code"], df["atc_name"]))
    tsv = package_file("ontoloviz_server", "web_dist", "templates", "atc_template.tsv")
    df = pd.read_csv(tsv, sep="\t", dtype=str)
    return _table(zip(df["ATC code"], df["Label"]))
