"""Load the built vocabulary and its graph together, optionally restricted to some systems.

Sits above `medtok.codes` and `medtok.graph` (it needs both), so neither imports the other
for it; training, tokenization, evaluation, the QA linker and the EHR harness all use this
one function."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medtok.codes.vocabulary import Vocabulary
from medtok.graph.graph import CodeGraph
from medtok.paths import default_vocab_dir


def subset_vocabulary(vocab: Vocabulary, graph: CodeGraph, systems: list[str] | None):
    """The vocabulary and graph restricted to `systems` (edges to other systems dropped)."""
    if not systems:
        return vocab, graph
    keep = vocab.codes["system"].isin(systems).to_numpy()
    if not keep.any():
        raise ValueError(f"no codes of systems {systems}; the vocabulary has {vocab.systems}")
    new = np.full(len(vocab), -1, dtype=np.int64)
    new[keep] = np.arange(keep.sum())
    codes = vocab.codes[keep].reset_index(drop=True).copy()
    kept_ids = set(codes["code_id"])
    codes["parents"] = [[p for p in ps if p in kept_ids] for ps in codes["parents"]]
    e = keep[graph.src] & keep[graph.dst]
    g = CodeGraph(int(keep.sum()), new[graph.src[e]], new[graph.dst[e]], graph.etype[e], graph.edge_type_names)
    return Vocabulary(codes), g


def load_vocabulary(vocab_dir: str | Path | None = None, systems: list[str] | None = None):
    """(Vocabulary, CodeGraph) from `vocab_dir` (default: the built cache), restricted to `systems`."""
    vdir = Path(vocab_dir) if vocab_dir else default_vocab_dir()
    return subset_vocabulary(Vocabulary.load(vdir), CodeGraph.load(vdir), systems)
