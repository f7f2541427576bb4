"""Assemble the vocabulary and graph from all sources, cache them, print statistics.

`build_vocabulary(out_dir, systems=..., extra_codes=[...], kg_mondo=..., kg_primekg=...)`
writes `out_dir/codes.parquet` and `out_dir/graph/` and returns (Vocabulary, CodeGraph,
stats). A `build_meta.json` records the inputs; an identical rebuild reuses the cache.

The cache is written atomically (every file through a temporary file + rename, the meta last)
and the meta records each file's size and sha256. `verify_vocab_cache(dir)` checks them and
that the tables parse with the recorded row counts; a damaged cache is rebuilt with a logged
message, by `build_vocabulary` and by `medtok.loading.load_vocabulary` alike.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from medbase.atomic import atomic_write_text
from medbase.hashing import file_digest
from medtok.codes.sources import SourceTable
from medtok.codes.sources.atc import load_atc
from medtok.codes.sources.ccs import load_ccs, load_ccsr
from medtok.codes.sources.icd10cm import load_icd10cm
from medtok.codes.sources.icd10pcs import load_icd10pcs
from medtok.codes.sources.icd9 import load_icd9cm, load_icd9pcs, load_icd_gems
from medtok.codes.sources.user_files import load_code_file
from medtok.codes.vocabulary import Vocabulary
from medtok.graph.external import attach_external
from medtok.graph.graph import CodeGraph

log = logging.getLogger(__name__)
META_NAME = "build_meta.json"
CACHE_FILES = ("codes.parquet", "graph/edges.parquet", "graph/meta.json")


def _loaders():
    return {"ICD10CM": load_icd10cm, "ICD9CM": load_icd9cm, "ICD9PCS": load_icd9pcs,
            "ICD10PCS": load_icd10pcs, "GEM": load_icd_gems, "ATC": load_atc, "CCS": load_ccs, "CCSR": load_ccsr}


DEFAULT_SYSTEMS = ["ICD10CM", "ICD9CM", "ICD9PCS", "ICD10PCS", "GEM", "ATC", "CCS", "CCSR"]


def assemble(tables: list[SourceTable]) -> tuple[Vocabulary, CodeGraph, dict]:
    """Merge source tables: first occurrence of a code_id wins (later rows only add synonyms),
    parents/edges pointing to unknown codes are dropped and counted."""
    codes = pd.concat([t.codes for t in tables if len(t.codes)], ignore_index=True)
    codes = codes[codes["description"].astype(str).str.strip() != ""]
    dup = codes["code_id"].duplicated(keep="first")
    if dup.any():
        extra = codes[dup].groupby("code_id")["synonyms"].sum()
        codes = codes[~dup].reset_index(drop=True)
        has = codes["code_id"].isin(extra.index)
        codes["synonyms"] = [sorted(set(s) | set(extra[c])) if h else s
                             for c, s, h in zip(codes["code_id"], codes["synonyms"], has)]
    index = pd.Series(np.arange(len(codes)), index=codes["code_id"])
    known = set(codes["code_id"])
    dangling = 0
    clean_parents = []
    for ps in codes["parents"]:
        keep = [p for p in ps if p in known]
        dangling += len(ps) - len(keep)
        clean_parents.append(keep)
    codes["parents"] = clean_parents
    child = np.repeat(np.arange(len(codes)), [len(p) for p in clean_parents])
    parent = index.reindex([p for ps in clean_parents for p in ps]).to_numpy()
    frames = [pd.DataFrame({"src": child, "dst": parent, "type": "is_a"})]
    dropped_edges = Counter()
    for t in tables:
        if not len(t.edges):
            continue
        s = index.reindex(t.edges["src_id"]).to_numpy()
        d = index.reindex(t.edges["dst_id"]).to_numpy()
        ok = ~(np.isnan(s) | np.isnan(d))
        for typ, n in Counter(t.edges["type"][~ok]).items():
            dropped_edges[typ] += n
        frames.append(pd.DataFrame({"src": s[ok].astype(np.int64), "dst": d[ok].astype(np.int64),
                                    "type": t.edges["type"].to_numpy()[ok]}))
    edges = pd.concat(frames, ignore_index=True).drop_duplicates()
    vocab = Vocabulary(codes)
    graph = CodeGraph.from_frame(len(codes), edges)
    stats = {"dangling_parents_dropped": dangling, "edges_dropped_unknown_endpoint": dict(dropped_edges),
             "rows_skipped_by_loaders": {t.name: t.skipped for t in tables if t.skipped}}
    return vocab, graph, stats


def statistics(vocab: Vocabulary, graph: CodeGraph) -> dict:
    df = vocab.codes
    deg = graph.degree()
    return {
        "codes": len(df),
        "codes_per_system": df["system"].value_counts().sort_index().to_dict(),
        "edges": graph.num_edges,
        "edges_per_type": graph.edge_counts(),
        "roots_per_system": df.loc[(df["parents"].map(len) == 0) & (df["kind"] != "concept"), "system"]
        .value_counts().sort_index().to_dict(),
        "concept_nodes": int((df["kind"] == "concept").sum()),
        "codes_with_no_edges": int((deg == 0).sum()),
        "empty_descriptions": int((df["description"].astype(str).str.strip() == "").sum()),
        "icd9_icd10_equivalence_edges": int(sum(graph.edge_counts().get(t, 0) for t in ("gem_icd9_icd10", "gem_icd10_icd9"))),
    }


def format_statistics(stats: dict) -> str:
    lines = [f"{'system':<12}{'codes':>10}{'roots':>8}"]
    for s, n in stats["codes_per_system"].items():
        lines.append(f"{s:<12}{n:>10,}{stats['roots_per_system'].get(s, 0):>8,}")
    lines.append(f"{'total':<12}{stats['codes']:>10,}")
    lines.append("")
    lines.append(f"{'edge type':<24}{'edges':>10}")
    for t, n in stats["edges_per_type"].items():
        lines.append(f"{t:<24}{n:>10,}")
    lines.append(f"{'total':<24}{stats['edges']:>10,}")
    lines.append("")
    lines.append(f"codes with no parent (roots): {sum(stats['roots_per_system'].values()):,}")
    lines.append(f"external concept nodes:       {stats.get('concept_nodes', 0):,}")
    lines.append(f"codes with no edges:          {stats['codes_with_no_edges']:,}")
    lines.append(f"empty descriptions:           {stats['empty_descriptions']:,}")
    for k in ("dangling_parents_dropped", "edges_dropped_unknown_endpoint", "rows_skipped_by_loaders"):
        if k in stats:
            lines.append(f"{k.replace('_', ' ')}: {stats[k]}")
    return "\n".join(lines)


def _fingerprint(args: dict) -> str:
    payload = dict(args)
    for key in ("extra_codes", "kg_files"):
        payload[key] = [(str(p), Path(p).stat().st_mtime_ns if Path(p).exists() else None) for p in payload.get(key, [])]
    # the builder's own source is part of the key: editing a loader invalidates the cache
    # (this file, the code loaders and the graph only: editing the tokenizer must not rebuild the vocabulary)
    pkg = Path(__file__).resolve().parent
    sources = sorted([Path(__file__).resolve(), *(pkg / "codes").rglob("*.py"), *(pkg / "graph").rglob("*.py")])
    payload["code"] = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_build_meta(out_dir: str | Path) -> dict | None:
    """The cache's build_meta.json, or None when it is missing or does not parse."""
    try:
        meta = json.loads((Path(out_dir) / META_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def verify_vocab_cache(out_dir: str | Path, load: bool = True):
    """(reason, None) when the cache at `out_dir` is missing or damaged; else (None, (vocab, graph))
    -- loaded when `load`. Checks the recorded sizes and digests, then that the tables parse with
    the recorded numbers of codes and edges."""
    out_dir = Path(out_dir)
    meta = read_build_meta(out_dir)
    if meta is None:
        return f"{out_dir / META_NAME} is missing or unreadable", None
    files = meta.get("files")
    if not isinstance(files, dict):
        return f"{out_dir / META_NAME} records no file digests (written by an older version)", None
    for name in CACHE_FILES:
        p, rec = out_dir / name, files.get(name) or {}
        if not p.exists():
            return f"{p} is missing", None
        if p.stat().st_size != rec.get("bytes") or file_digest(p) != rec.get("sha256"):
            return f"{p} does not match the size/sha256 recorded at build time (truncated or damaged)", None
    if not load:
        return None, None
    try:
        vocab, graph = Vocabulary.load(out_dir), CodeGraph.load(out_dir)
    except Exception as e:  # any parse failure means the cache is unusable
        return f"the cache at {out_dir} does not load: {e}", None
    stats = meta.get("stats", {})
    if len(vocab) != stats.get("codes") or graph.num_nodes != len(vocab) or graph.num_edges != stats.get("edges"):
        return f"the cache at {out_dir} has {len(vocab)} codes / {graph.num_edges} edges, " \
               f"the build recorded {stats.get('codes')} / {stats.get('edges')}", None
    return None, (vocab, graph)


def rebuild_from_meta(out_dir: str | Path, progress: bool = True):
    """Rebuild a damaged cache with the arguments its build_meta.json recorded (None if it has none)."""
    meta = read_build_meta(out_dir)
    kwargs = (meta or {}).get("build_kwargs")
    if not isinstance(kwargs, dict):
        return None
    return build_vocabulary(out_dir, **kwargs, force=True, progress=progress)


def build_vocabulary(out_dir: str | Path, systems: list[str] | None = None, extra_codes: list[str | Path] = (),
                     atc_file: str | Path | None = None, kg_mondo: str | Path | None = None,
                     kg_primekg: str | Path | None = None, kg_hetionet: str | Path | None = None,
                     force: bool = False, progress: bool = True) -> tuple[Vocabulary, CodeGraph, dict]:
    out_dir = Path(out_dir)
    systems = list(systems or DEFAULT_SYSTEMS)
    args = {"systems": systems, "extra_codes": [str(p) for p in extra_codes], "atc_file": str(atc_file or ""),
            "kg_files": [str(p) for p in (kg_mondo, kg_primekg, kg_hetionet) if p], "version": 1}
    build_kwargs = {"systems": systems, "extra_codes": [str(p) for p in extra_codes],
                    "atc_file": str(atc_file) if atc_file else None,
                    **{k: str(v) if v else None for k, v in
                       (("kg_mondo", kg_mondo), ("kg_primekg", kg_primekg), ("kg_hetionet", kg_hetionet))}}
    fp = _fingerprint(args)
    meta = read_build_meta(out_dir)
    if not force and meta is not None and meta.get("fingerprint") == fp:
        reason, loaded = verify_vocab_cache(out_dir)
        if reason is None:
            vocab, graph = loaded
            stats = meta["stats"]
            stats["cached"] = True
            return vocab, graph, stats
        log.warning("vocabulary cache not reused: %s; rebuilding", reason)
    t0 = time.perf_counter()
    loaders = _loaders()
    unknown = [s for s in systems if s not in loaders]
    if unknown:
        raise ValueError(f"unknown systems {unknown}; choose from {list(loaders)}")
    tables = []
    for name in tqdm(systems, desc="code systems", disable=not progress):
        tables.append(loaders[name](atc_file) if name == "ATC" and atc_file else loaders[name]())
    for path in extra_codes:
        tables.append(load_code_file(path))
    vocab, graph, build_stats = assemble(tables)
    if kg_mondo or kg_primekg or kg_hetionet:
        vocab, graph, ext_stats = attach_external(vocab, graph, mondo_dir=kg_mondo, primekg_file=kg_primekg,
                                                  hetionet_dir=kg_hetionet, progress=progress)
        build_stats["external"] = ext_stats
    stats = {**statistics(vocab, graph), **build_stats, "build_seconds": round(time.perf_counter() - t0, 1)}
    (out_dir / META_NAME).unlink(missing_ok=True)  # no meta describes a half-written cache
    vocab.save(out_dir)
    graph.save(out_dir)
    files = {n: {"bytes": (out_dir / n).stat().st_size, "sha256": file_digest(out_dir / n)} for n in CACHE_FILES}
    atomic_write_text(out_dir / META_NAME, json.dumps({"fingerprint": fp, "args": args, "build_kwargs": build_kwargs,
                                                       "files": files, "stats": stats}, indent=1, default=str))
    stats["cached"] = False
    return vocab, graph, stats
