"""Sources -> MEDS: one entry point, `convert_source`, for every dataset (re-exported by `ehr.sources`).

    result = convert_source(SourceConfig(dataset="mimic3", root=..., out=...))
    result.out_dir             # a MEDS directory (data/, metadata/)
    result.ledger.frame()      # rows skipped / kept with a note, per table and reason
    result.coverage            # per code family: events, resolved, coverage
    result.unmapped            # unmapped codes, most frequent first (kept in the data)
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from ehr.sources.assemble import AssembleResult, assemble_meds
from ehr.sources.base import Context, Ledger
from ehr.sources.codes import CodeResolver
from ehr.sources.eicu import convert_eicu
from ehr.sources.meds_dir import convert_meds_dir
from ehr.sources.mimic import LAYOUTS, convert_mimic
from ehr.splits import DEFAULT_FRACTIONS, assign_splits, complete_splits
from medbase.jsonconfig import JsonConfig

SOURCE_DATASETS = ("mimic3", "mimic4", "eicu", "meds")
RULES = {
    "mimic3": "diagnoses and procedures at dischtime; prescriptions' startdate at 23:59:59 (discharge time on "
              "the discharge day); age >= 90 at first admission -> birth = first admission - 90 y; death: "
              "deathtime > dischtime if hospital_expire_flag = 1 > dod at 23:59:59",
    "mimic4": "diagnoses at dischtime; procedures' chartdate at 23:59:59 (discharge time on the discharge day); "
              "birth = 1 January of anchor_year - min(anchor_age, 90); death: deathtime > dischtime if "
              "hospital_expire_flag = 1 > dod at 23:59:59",
    "eicu": "relative times only: each hospital stay starts on 1 January of hospitaldischargeyear at "
            "hospitaladmittime24, pushed to >= 1 day after the patient's previous hospital discharge (stays "
            "ordered by year, then patienthealthsystemstayid); unit admission = hospital admission - "
            "hospitaladmitoffset; events at unit admission + offset; age '> 89' -> 90, birth = first hospital "
            "admission - age years; death at unit (else hospital) discharge when status is Expired",
    "meds": "times as given; codes mapped by the MEDS import rules; the source's subject_splits kept",
}


@dataclass
class SourceConfig(JsonConfig):
    """What to convert and how. `ndc_atc` (path to fabkury's NDC->ATC zip) is
    non-commercial data: opt-in only, never a default."""

    dataset: str = "mimic3"
    root: str = ""
    out: str = ""
    seed: int = 0
    split_fractions: dict = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))
    subjects_per_shard: int = 20_000
    vocab_dir: str | None = None
    ndc_atc: str | None = None
    eicu_icd: str = "both"
    keep_work: bool = False
    progress: bool = True

    def __post_init__(self):
        if self.dataset not in SOURCE_DATASETS:
            raise ValueError(f"dataset must be one of {SOURCE_DATASETS}, got {self.dataset!r}")
        if self.eicu_icd not in ("both", "icd9", "icd10"):
            raise ValueError(f"eicu_icd must be 'both', 'icd9' or 'icd10', got {self.eicu_icd!r}")
        if self.subjects_per_shard < 1:
            raise ValueError("subjects_per_shard must be >= 1")
        if abs(sum(self.split_fractions.values()) - 1) > 1e-9:
            raise ValueError(f"split_fractions must sum to 1, got {self.split_fractions}")


@dataclass
class ConvertResult:
    dataset: str
    out_dir: Path
    ledger: Ledger
    assembled: AssembleResult
    seconds: float

    @property
    def coverage(self) -> pl.DataFrame:
        return self.assembled.coverage

    @property
    def unmapped(self) -> pl.DataFrame:
        return self.assembled.unmapped


def convert_source(cfg: SourceConfig, resolver: CodeResolver | None = None) -> ConvertResult:
    """Convert `cfg.root` (a `cfg.dataset` source) into a MEDS directory at `cfg.out`."""
    t0 = time.perf_counter()
    root, out = Path(cfg.root), Path(cfg.out)
    if not root.is_dir():
        raise FileNotFoundError(f"{cfg.dataset}: root directory {root} does not exist")
    resolver = resolver or CodeResolver.from_vocab_dir(cfg.vocab_dir, cfg.ndc_atc)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".work-", dir=out))
    try:
        ctx = Context(cfg.dataset, root, work, resolver, eicu_icd=cfg.eicu_icd, progress=cfg.progress)
        given_splits, meta = None, {"dataset_name": cfg.dataset, "conversion_rules": RULES[cfg.dataset],
                                    "source_root": str(root), "ndc_atc_opt_in": bool(cfg.ndc_atc)}
        if cfg.dataset in ("mimic3", "mimic4"):
            frames = convert_mimic(ctx, LAYOUTS[cfg.dataset])
        elif cfg.dataset == "eicu":
            frames = convert_eicu(ctx)
            meta["relative_times"] = True
            meta["discharge_stamped_pattern"] = ""   # eICU stamps diagnoses when entered, not at discharge
        else:
            frames, given_splits, their_meta = convert_meds_dir(ctx)
            meta.update({"dataset_name": their_meta.get("dataset_name") or root.name, "imported_from": their_meta})

        def splits_fn(subjects):
            if given_splits is not None:
                splits, n_hashed = complete_splits(given_splits, subjects, cfg.seed, cfg.split_fractions)
                if n_hashed:
                    ctx.ledger.add(cfg.dataset, "subject_splits", "subject not in the source's splits (hashed)",
                                   n_hashed, action="kept")
                return splits, {"splits": "source", "split_seed": cfg.seed, "subjects_hashed": n_hashed}
            return (assign_splits(subjects, cfg.seed, cfg.split_fractions),
                    {"splits": "hash", "split_seed": cfg.seed, "split_fractions": cfg.split_fractions})

        if ctx._bar is not None:
            ctx._bar.close()
        res = assemble_meds(ctx, frames, out, splits_fn=splits_fn, subjects_per_shard=cfg.subjects_per_shard,
                            dataset_meta=meta, progress=cfg.progress)
    finally:
        if not cfg.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    return ConvertResult(cfg.dataset, out, ctx.ledger, res, time.perf_counter() - t0)

