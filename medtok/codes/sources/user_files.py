"""Any other code system from user files: a CSV/parquet with code, description, parents; a
MEDS `metadata/codes.parquet` (`code`, `description`, `parent_codes`); MIMIC `d_icd_*` tables.
Bad rows are reported (logged with their row number) and skipped, never fatal."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from medtok.codes.normalize import canonical_system, normalize_code, split_code_id
from medtok.codes.sources.base import SourceTable, rows_frame

log = logging.getLogger(__name__)


def _read(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, dtype=str, keep_default_na=False, on_bad_lines="skip")


def _as_list(v) -> list[str]:
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return []
    if isinstance(v, str):
        return [p.strip() for p in v.replace("|", ";").split(";") if p.strip()]
    return [str(p) for p in v]


def load_code_file(path: str | Path, system: str | None = None) -> SourceTable:
    """Columns understood: `code` (may carry a `SYSTEM:` prefix, MEDS-style `SYSTEM//CODE` too),
    `system` (else the `system` argument), `description`, `parents`/`parent_codes` (`;`-separated
    or a list), `synonyms`. MIMIC `d_icd_diagnoses`/`d_icd_procedures` are recognised by their
    `icd9_code`, `long_title` columns."""
    path = Path(path)
    df = _read(path)
    cols = {c.lower(): c for c in df.columns}
    if "icd9_code" in cols and "long_title" in cols:  # MIMIC-III d_icd_* tables
        sys_ = "ICD9PCS" if "procedure" in path.name else "ICD9CM"
        df = pd.DataFrame({"code": df[cols["icd9_code"]], "description": df[cols["long_title"]], "system": sys_})
        cols = {c: c for c in df.columns}
    rows, skipped = [], 0
    for i, r in enumerate(df.to_dict("records")):
        raw = str(r.get(cols.get("code", "code"), "") or "").strip()
        if "//" in raw and ":" not in raw:  # MEDS codes look like "ICD10CM//E11.9"
            raw = raw.replace("//", ":", 1)
        sys_in, code = split_code_id(raw)
        sys_ = canonical_system(str(r.get(cols.get("system", "system")) or sys_in or system or ""))
        desc = str(r.get(cols.get("description", "description"), "") or "").strip()
        norm = normalize_code(code, sys_) if sys_ and code else None
        if not sys_ or not norm or not desc or desc.lower() == "nan":
            log.warning("%s row %d skipped: code=%r system=%r description=%r", path.name, i, raw, sys_, desc[:40])
            skipped += 1
            continue
        parents = []
        for p in _as_list(r.get(cols.get("parents", cols.get("parent_codes", "parents")))):
            psys, pcode = split_code_id(p.replace("//", ":", 1))
            psys = psys or sys_
            pnorm = normalize_code(pcode, psys)
            if pnorm:
                parents.append(f"{psys}:{pnorm}")
        rows.append(dict(code_id=f"{sys_}:{norm}", system=sys_, code=norm, description=desc, parents=parents,
                         synonyms=_as_list(r.get(cols.get("synonyms", "synonyms"))), kind="code"))
    if skipped:
        log.warning("%s: %d bad rows skipped, %d kept", path.name, skipped, len(rows))
    return SourceTable(f"file:{path.name}", rows_frame(rows), skipped=skipped)
