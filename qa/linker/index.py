"""TF-IDF character-3-gram vectors of every KB alias in an nmslib HNSW index, cached on disk.

scispacy's `create_tfidf_ann_index` cannot be used here: it refuses scipy >= 1.11 (it stores
float16 sparse vectors) and hard-codes `min_df=10`, which drops the 3-grams of rare names.
This module builds the same three artefacts (alias list, fitted vectorizer, HNSW index)
with `min_df=1` and float32, in a directory keyed by a fingerprint of the vocabulary rows
and the build settings, so a second run only loads (seconds) instead of rebuilding.

Nothing in the directory is pickled (scispacy's joblib vectorizer would be): a fitted TF-IDF
vectorizer is stored as data (`save_tfidf`: its terms and settings as JSON, idf as .npy) and
rebuilt on load, so loading a directory someone else built runs no code from it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Iterable

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from medbase.paths import cache_dir
from medtok.codes.vocabulary import Vocabulary
from qa.linker.abbreviations import ABBREVIATIONS
from qa.linker.config import LinkerConfig
from qa.linker.kb import CodeKnowledgeBase, build_knowledge_base, gem_titles, linkable_rows

# 2: the vectorizer is stored as data (tfidf.json + tfidf_idf.npy), no longer as a joblib pickle
INDEX_FORMAT = 2
FILES = ("config.json", "kb.jsonl", "alias_ranks.json", "concept_aliases.json", "tfidf.json", "tfidf_idf.npy",
         "nmslib_index.bin", "nmslib_index.bin.dat", "build_info.json")
OLD_FORMAT_FILES = ("tfidf_vectorizer.joblib",)  # never loaded: their presence only explains the refusal


def save_tfidf(vectorizer: TfidfVectorizer, directory: Path, stem: str) -> None:
    """A fitted TfidfVectorizer as `<stem>.json` (settings + terms in column order) and `<stem>_idf.npy`.

    A callable analyzer is not stored (only the fact that there is one): `load_tfidf` takes it from
    the caller's code. Other callables (tokenizer, preprocessor) are refused."""
    params = vectorizer.get_params()
    code_analyzer = callable(params["analyzer"])
    if code_analyzer:
        params["analyzer"] = None
    if params["preprocessor"] is not None or params["tokenizer"] is not None or params["vocabulary"] is not None:
        raise ValueError("only vectorizers without a custom tokenizer/preprocessor/fixed vocabulary can be stored")
    params["dtype"] = np.dtype(params["dtype"]).name
    params["ngram_range"] = list(params["ngram_range"])
    terms = [""] * len(vectorizer.vocabulary_)
    for term, col in vectorizer.vocabulary_.items():
        terms[col] = term
    (directory / f"{stem}.json").write_text(json.dumps({"params": params, "code_analyzer": code_analyzer,
                                                         "terms": terms}))
    np.save(directory / f"{stem}_idf.npy", np.asarray(vectorizer.idf_))


def load_tfidf(directory: Path, stem: str, analyzer=None) -> TfidfVectorizer:
    """The vectorizer `save_tfidf` stored, rebuilt: same settings, vocabulary and idf, so `transform`
    gives the same matrix bit for bit. `analyzer`: the function to attach when it was a callable."""
    meta = json.loads((directory / f"{stem}.json").read_text())
    params, terms = dict(meta["params"]), meta["terms"]
    unknown = set(params) - set(TfidfVectorizer().get_params())
    if unknown:
        raise ValueError(f"{directory / stem}.json: unknown vectorizer settings {sorted(unknown)}")
    if meta["code_analyzer"]:
        if not callable(analyzer):
            raise ValueError(f"{directory / stem}.json was fitted with a code analyzer: pass `analyzer=`")
        params["analyzer"] = analyzer
    elif not isinstance(params["analyzer"], str):
        raise ValueError(f"{directory / stem}.json: analyzer must be a name, got {params['analyzer']!r}")
    if params["dtype"] not in ("float32", "float64"):
        raise ValueError(f"{directory / stem}.json: unsupported dtype {params['dtype']!r}")
    params["dtype"] = np.dtype(params["dtype"]).type
    params["ngram_range"] = tuple(params["ngram_range"])
    idf = np.load(directory / f"{stem}_idf.npy", allow_pickle=False)
    if idf.ndim != 1 or idf.dtype.kind != "f" or len(idf) != len(terms) or len(set(terms)) != len(terms):
        raise ValueError(f"{directory / stem}: idf of shape {idf.shape} does not match {len(terms)} distinct terms")
    vectorizer = TfidfVectorizer(**params)
    vectorizer.vocabulary_ = {t: i for i, t in enumerate(terms)}  # before idf_: its setter checks the length
    vectorizer.idf_ = idf  # the public setter (sklearn >= 1.0) builds the inner TfidfTransformer
    return vectorizer


def _nmslib():
    try:
        import nmslib
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the code linker needs nmslib: pip install nmslib (or scispacy, which depends on it)") from e
    return nmslib


@dataclass
class AliasIndex:
    """The ANN side of scispacy's CandidateGenerator: aliases, vectorizer and HNSW index."""

    concept_aliases: list[str]
    vectorizer: TfidfVectorizer
    ann_index: object  # nmslib FloatIndex
    build_seconds: float = 0.0

    @classmethod
    def build(cls, aliases: Iterable[str], config: LinkerConfig) -> "AliasIndex":
        nmslib = _nmslib()
        t0 = time.perf_counter()
        aliases = sorted(set(aliases))  # sorted: same input -> same vectorizer vocabulary
        vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 3), min_df=1, dtype=np.float32)
        vectors = vectorizer.fit_transform(aliases)
        # nmslib crashes on all-zero rows (aliases with no 3-gram, e.g. "a")
        keep = np.asarray(vectors.sum(axis=1)).ravel() != 0
        aliases = [a for a, k in zip(aliases, keep) if k]
        vectors = vectors[keep]
        index = nmslib.init(method="hnsw", space="cosinesimil_sparse", data_type=nmslib.DataType.SPARSE_VECTOR)
        index.addDataPointBatch(vectors)
        index.createIndex({"M": config.hnsw_m, "efConstruction": config.ef_construction, "post": 0,
                           "indexThreadQty": config.index_threads}, print_progress=False)
        index.setQueryTimeParams({"efSearch": config.ef_search})
        return cls(aliases, vectorizer, index, time.perf_counter() - t0)

    def save(self, directory: Path) -> None:
        (directory / "concept_aliases.json").write_text(json.dumps(self.concept_aliases))
        save_tfidf(self.vectorizer, directory, "tfidf")
        self.ann_index.saveIndex(str(directory / "nmslib_index.bin"), save_data=True)

    @classmethod
    def load(cls, directory: Path, ef_search: int) -> "AliasIndex":
        nmslib = _nmslib()
        aliases = json.loads((directory / "concept_aliases.json").read_text())
        vectorizer = load_tfidf(directory, "tfidf")
        index = nmslib.init(method="hnsw", space="cosinesimil_sparse", data_type=nmslib.DataType.SPARSE_VECTOR)
        index.loadIndex(str(directory / "nmslib_index.bin"), load_data=True)
        index.setQueryTimeParams({"efSearch": ef_search})
        return cls(aliases, vectorizer, index)


def fingerprint(vocab: Vocabulary, config: LinkerConfig, exclude: Mapping[str, Iterable[str]] | None = None,
                graph=None) -> str:
    """Hash of everything the built KB/index depends on: rows, build settings, exclusions, extra files,
    GEM titles."""
    h = hashlib.sha256()
    h.update(json.dumps({"format": INDEX_FORMAT, **config.build_key()}, sort_keys=True).encode())
    rows = linkable_rows(vocab, config)
    for cid, desc, syns, kind in zip(rows["code_id"], rows["description"], rows["synonyms"], rows["kind"]):
        h.update(f"{cid}\t{desc}\t{kind}\t{'|'.join(syns)}\n".encode())
    for cid in sorted(exclude or {}):
        h.update(f"x\t{cid}\t{'|'.join(sorted(exclude[cid]))}\n".encode())
    for p in config.extra_alias_files:
        h.update(Path(p).read_bytes())
    if config.gem_aliases:
        for cid, titles in sorted(gem_titles(vocab, graph).items()):
            h.update(f"g\t{cid}\t{'|'.join(titles)}\n".encode())
    # the abbreviation table is code, not data: include it so editing it invalidates caches
    h.update(repr(ABBREVIATIONS).encode())
    return h.hexdigest()[:16]


def default_index_root() -> Path:
    return cache_dir() / "linker"


def is_index_dir(directory: str | Path) -> bool:
    return all((Path(directory) / f).exists() for f in FILES)


def build_index_dir(vocab: Vocabulary, config: LinkerConfig | None = None, *,
                    exclude: Mapping[str, Iterable[str]] | None = None, graph=None,
                    root: str | Path | None = None, rebuild: bool = False, verbose: bool = True) -> Path:
    """Directory holding the KB + index for (vocab, config, exclude, graph); built only when missing."""
    config = config or LinkerConfig()
    root = Path(root) if root is not None else default_index_root()
    directory = root / fingerprint(vocab, config, exclude, graph)
    if is_index_dir(directory) and not rebuild:
        return directory
    t0 = time.perf_counter()
    kb = build_knowledge_base(vocab, config, exclude, graph)
    t_kb = time.perf_counter() - t0
    if verbose:
        # progress goes to stderr: stdout is for results (`link_codes.py --json` must stay parseable)
        print(f"[linker] KB: {len(kb.cui_to_entity)} codes, {len(kb.alias_to_cuis)} aliases ({t_kb:.1f}s); "
              f"building HNSW index (M={config.hnsw_m}, efConstruction={config.ef_construction}) ...",
              file=sys.stderr, flush=True)
    index = AliasIndex.build(kb.alias_to_cuis.keys(), config)
    # write into a temporary sibling, then rename: a crashed build never looks complete
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    kb.save(tmp)
    index.save(tmp)
    config.save(tmp / "config.json")
    info = {"format": INDEX_FORMAT, "codes": len(kb.cui_to_entity), "aliases": len(index.concept_aliases), "kb_seconds": round(t_kb, 2),
            "index_seconds": round(index.build_seconds, 2), "systems": list(config.systems)}
    (tmp / "build_info.json").write_text(json.dumps(info, indent=2))
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)
    if verbose:
        print(f"[linker] index built in {index.build_seconds:.1f}s -> {directory}", file=sys.stderr, flush=True)
    return directory


def load_index_dir(directory: str | Path, ef_search: int | None = None) -> tuple[CodeKnowledgeBase, AliasIndex, dict]:
    directory = Path(directory)
    info_path = directory / "build_info.json"
    fmt = json.loads(info_path.read_text()).get("format") if info_path.exists() else None
    old = [f for f in OLD_FORMAT_FILES if (directory / f).exists()]
    if fmt != INDEX_FORMAT and (info_path.exists() or old):
        # an older index (format 1 pickled its vectorizer): refused before anything is read, never unpickled
        raise ValueError(f"{directory} holds a linker index of format {fmt or 1}{' (' + ', '.join(old) + ')' if old else ''}"
                         f", this version reads format {INDEX_FORMAT}; delete it to rebuild "
                         "(CodeLinker.build, or scripts/link_codes.py without --index-dir)")
    if not is_index_dir(directory):
        missing = [f for f in FILES if not (directory / f).exists()]
        raise FileNotFoundError(f"{directory} is not a linker index (missing {missing})")
    config = LinkerConfig.from_index(directory / "config.json")
    kb = CodeKnowledgeBase.load(directory)
    index = AliasIndex.load(directory, ef_search or config.ef_search)
    info = json.loads(info_path.read_text())
    return kb, index, info
