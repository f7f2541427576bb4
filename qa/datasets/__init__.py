"""QA datasets behind one entry point: `load_dataset(name, path=None, split=None, **kwargs)`.

    meddx     MedDDx JSON (default path ../shared/data/qa/MedDDx.json; `hf_id=` for the hub)
    mc_file   a JSON / JSONL / CSV multiple-choice file (path required)
    ontology  questions generated from the code vocabulary (path = vocabulary dir, optional)

Malformed records are logged with their index (and line) and skipped; a file that cannot be
read as records at all raises `DatasetFileError` (a ValueError).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from qa.datasets.common import DatasetFileError, MalformedRecord, ParseIssue, filter_split
from qa.datasets.mc_file import load_mc_file
from qa.datasets.meddx import load_meddx
from qa.datasets.ontology import OntologyQAConfig, build_ontology_qa, load_ontology
from qa.datasets.relational.questions import load_relational
from qa.types import MCQuestion

REGISTRY: dict[str, Callable[..., list[MCQuestion]]] = {
    "meddx": load_meddx,
    "mc_file": load_mc_file,
    "ontology": load_ontology,
    "relational": load_relational,
}
ALIASES = {"file": "mc_file", "json": "mc_file", "jsonl": "mc_file", "csv": "mc_file", "medddx": "meddx"}


def dataset_names() -> list[str]:
    return sorted(REGISTRY)


def load_dataset(name: str, path: str | Path | None = None, split: str | None = None, **kwargs) -> list[MCQuestion]:
    """Questions of dataset `name` (see module doc); `split` filters by split or difficulty."""
    key = ALIASES.get(name.lower(), name.lower())
    if key not in REGISTRY:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(dataset_names())}")
    if key == "mc_file" and path is None:
        raise ValueError("dataset 'mc_file' needs path= (a .json, .jsonl or .csv file)")
    return REGISTRY[key](path, split=split, **kwargs)


__all__ = ["load_dataset", "dataset_names", "REGISTRY", "ParseIssue", "MalformedRecord", "DatasetFileError",
           "filter_split", "load_meddx",
           "load_mc_file", "load_ontology", "build_ontology_qa", "OntologyQAConfig", "MCQuestion"]
