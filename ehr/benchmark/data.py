"""Datasets for the benchmark: a source (MIMIC-III/IV, eICU, a MEDS directory, the synthetic
cohort) -> MEDS events + subject splits + metadata + a data fingerprint.

Sources are converted once with `ehr.sources.convert_source` into
`cache_dir()/ehr_bench/meds/<dataset>-<hash of the root path>` (reused while the source files'
names, sizes and times are unchanged). `synthetic`: `--root` is a synthetic MEDS directory
(`ehr.synthetic.write_synthetic_meds`), generated there first when it does not exist
(`SyntheticSpec`). The fingerprint is a hash of the MEDS data shards, splits and metadata:
every result file carries it, so results from different data never mix silently.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from ehr.meds_io import read_dataset_json, read_meds, read_splits
from ehr.sources import SourceConfig, convert_source
from ehr.splits import assign_splits
from ehr.synthetic.cohort import SyntheticConfig, write_synthetic_meds
from medbase.atomic import atomic_write_text
from medbase.hashing import file_digest
from medbase.paths import cache_dir

DATASETS = ("mimic3", "mimic4", "eicu", "meds", "synthetic")


@dataclass
class Cohort:
    name: str
    events: pl.DataFrame
    splits: pl.DataFrame
    meta: dict
    meds_dir: Path | None
    fingerprint: str
    truth: pl.DataFrame | None = None       # synthetic: per-subject generative truth
    info: dict = field(default_factory=dict)


@dataclass
class SyntheticSpec:
    n_patients: int = 2000
    scenario: str = "hierarchy"
    seed: int = 0


def _source_stamp(root: Path) -> str:
    h = hashlib.blake2b(digest_size=10)
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(root)}|{st.st_size}|{int(st.st_mtime)}\n".encode())
    return h.hexdigest()


def meds_fingerprint(meds_dir: Path) -> str:
    h = hashlib.blake2b(digest_size=12)
    files = sorted((meds_dir / "data").rglob("*.parquet")) + [meds_dir / "metadata" / n for n in
                                                              ("subject_splits.parquet", "codes.parquet")]
    for p in files:
        if p.exists():
            h.update(f"{p.relative_to(meds_dir)}:{file_digest(p)}\n".encode())
    return h.hexdigest()


def convert_cached(dataset: str, root: str | Path, out_root: str | Path | None = None, progress: bool = False) -> Path:
    """MEDS directory of a converted source (converted on first use)."""

    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"{dataset}: root directory {root} does not exist")
    key = hashlib.blake2b(str(root).encode(), digest_size=6).hexdigest()
    out = Path(out_root or cache_dir() / "ehr_bench" / "meds") / f"{dataset}-{key}"
    stamp = _source_stamp(root)
    marker = out / ".source_stamp"
    if marker.exists() and marker.read_text().strip() == stamp and (out / "metadata" / "dataset.json").exists():
        return out
    if out.exists():
        import shutil

        shutil.rmtree(out)
    convert_source(SourceConfig(dataset=dataset, root=str(root), out=str(out), progress=progress))
    atomic_write_text(marker, stamp + "\n")
    return out


def ensure_synthetic(root: str | Path, spec: SyntheticSpec | None = None, progress: bool = False) -> Path:
    """A synthetic MEDS directory at `root` (generated when absent)."""

    root = Path(root)
    if (root / "metadata" / "dataset.json").exists() and (root / "synthetic" / "config.json").exists():
        return root      # complete (the generator writes synthetic/config.json last)
    import shutil

    for part in ("data", "metadata", "synthetic"):   # an interrupted generation: start it over
        if (root / part).is_dir():
            shutil.rmtree(root / part)
    spec = spec or SyntheticSpec()
    write_synthetic_meds(SyntheticConfig(n_patients=spec.n_patients, scenario=spec.scenario, seed=spec.seed), root,
                         progress=progress)
    return root


def load_cohort(dataset: str, root: str | Path, synthetic: SyntheticSpec | None = None, progress: bool = False) -> Cohort:

    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    if dataset == "synthetic":
        meds_dir = ensure_synthetic(root, synthetic, progress)
    else:
        meds_dir = convert_cached(dataset, root, progress=progress)
    events = read_meds(meds_dir)
    splits = read_splits(meds_dir)
    if splits is None:
        splits = assign_splits(events["subject_id"].unique())
    meta = read_dataset_json(meds_dir)
    truth = None
    tp = meds_dir / "synthetic" / "truth.parquet"
    if tp.exists():
        truth = pl.read_parquet(tp)
    name = dataset if dataset != "synthetic" else f"synthetic-{(meta.get('medtok') or meta).get('scenario', 'x')}"
    return Cohort(name=name, events=events, splits=splits, meta=meta, meds_dir=meds_dir,
                  fingerprint=meds_fingerprint(meds_dir), truth=truth,
                  info={"events": events.height, "subjects": int(events["subject_id"].n_unique()),
                        "source_root": str(root)})


def cohort_from_frames(name: str, events: pl.DataFrame, splits: pl.DataFrame, meta: dict | None = None,
                       truth: pl.DataFrame | None = None) -> Cohort:
    """An in-memory cohort (tests, fixtures); fingerprint = hash of the frames' content."""
    h = hashlib.blake2b(digest_size=12)
    h.update(json.dumps(events.hash_rows(seed=0).to_list()).encode())
    h.update(json.dumps(splits.sort("subject_id").rows()).encode())
    return Cohort(name=name, events=events, splits=splits, meta=meta or {}, meds_dir=None,
                  fingerprint=h.hexdigest(), truth=truth,
                  info={"events": events.height, "subjects": int(events["subject_id"].n_unique())})
