"""Load the built vocabulary and its graph together, optionally restricted to some systems.

Sits above `medtok.codes` and `medtok.graph` (it needs both), so neither imports the other
for it; training, tokenization, evaluation, the QA linker and the EHR harness all use this
one function.

A built cache (one with a build_meta.json) is verified on load -- recorded sizes, digests and
row counts -- and a damaged one is rebuilt from its recorded build arguments with a logged
message, instead of crashing the run or being used silently."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from medbase.paths import default_vocab_dir
from medtok.build import read_build_meta, rebuild_from_meta, verify_vocab_cache
from medtok.codes.vocabulary import Vocabulary
from medtok.graph.graph import CodeGraph

log = logging.getLogger(__name__)


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
    meta = read_build_meta(vdir)
    if meta is None or "files" not in meta:
        # a table saved directly (tests, user tools) or by an older build: nothing to verify against
        return subset_vocabulary(Vocabulary.load(vdir), CodeGraph.load(vdir), systems)
    reason, loaded = verify_vocab_cache(vdir)
    if reason is not None:
        log.warning("vocabulary cache damaged: %s; rebuilding it with its recorded arguments", reason)
        rebuilt = rebuild_from_meta(vdir)
        if rebuilt is None:
            raise RuntimeError(f"vocabulary cache at {vdir} is damaged ({reason}) and records no build "
                               f"arguments: rebuild it with `python scripts/build_vocab.py --out {vdir} --force`")
        loaded = rebuilt[:2]
    return subset_vocabulary(*loaded, systems)
