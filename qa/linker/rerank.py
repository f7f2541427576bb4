"""A learned re-ranker for a mention's candidate codes, fitted on the KB's own synonyms.

The character-3-gram score alone over-rewards long shared words: "recurrent periodic urticaria"
lands on M24.4 "recurrent dislocation" because "recurrent" has more 3-grams than "urticaria".
The re-ranker adds evidence the 3-gram cosine lacks and learns how to weigh it:
  * word level: TF-IDF over whole (prefix-stemmed) words, so a rare word weighs more than a
    frequent one, against each candidate's aliases and against all aliases of its category;
  * meaning: cosine of the mention's MiniLM embedding to the code's name and to its category's
    mean embedding (the project's frozen text encoder; names come from the embedding cache);
  * the generator's own signals: 3-gram cosine, category vote share, alias provenance, and each
    of these relative to the best candidate of the same mention.
Model: gradient-boosted trees (scikit-learn), one row per (mention, candidate), label "the
candidate is in the gold code's 3-character category". The category with the highest
probability wins; inside it the lexical order is kept (so code-level precision is not traded
for category-level gains).

Storage is pickle-free: the word vectorizer as data (`index.save_tfidf`, its analyzer is this
module's `word_analyzer`, re-attached on load) and the trees as arrays (`trees.py`), which are
also what scores candidates right after fitting, so a loaded re-ranker behaves exactly like the
fitted one.

Fitting data costs nothing and never touches evaluation terms: ICD-10-CM inclusion terms that
*are* in the KB are queried with the (alias, code) pairs they contribute removed
(`unseen_pairs`), which is exactly what a held-out synonym looks like. Exact alias matches
never go through the re-ranker.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer

from medbase.hashing import stable_fraction
from medtok.model.text_encoder import TextEmbedder, cached_text_embeddings
from qa.linker.index import load_tfidf, save_tfidf
from qa.linker.kb import RANK_DERIVED, RANK_NAME, RANK_SYNONYM, clean_alias, derive_aliases
from qa.linker.trees import GradientBoostedTrees

FEATURES = ("lexical", "category_share", "alias_rank", "is_group", "word_code", "word_category",
            "dense_code", "dense_category", "lexical_gap", "word_code_gap", "word_category_gap",
            "dense_code_gap", "dense_category_gap", "lexical_rank", "mention_words", "mention_best_lexical")
FORMAT = 3  # 3: no pickle (word_tfidf.json/.npy + trees.npz); 2 stored reranker.joblib
_WORDS = re.compile(r"[a-z0-9]+")
_STOP = frozenset("a an and as at by for from in into of on or the to with without nos nec other "
                  "unspecified specified due".split())


def word_analyzer(text: str) -> list[str]:
    """Lowercase words minus ICD filler, cut to 6 characters (a cheap stemmer: fracture/fractures)."""
    return [w[:6] for w in _WORDS.findall(text.lower()) if w not in _STOP]


def category_of(concept_id: str) -> str:
    system, code = concept_id.split(":", 1)
    return f"{system}:{code.replace('.', '')[:3]}"


@dataclass
class Candidate:
    """What the candidate generator knows about one code for one mention."""
    code_id: str
    lexical: float       # best alias 3-gram cosine minus tie penalties
    share: float         # category vote share among the neighbours
    alias_rank: int      # provenance rank of that best alias (kb.RANK_*)
    is_group: bool
    alias: str = ""      # the best alias


@dataclass
class Mention:
    """A mention as the re-ranker sees it: its text, word TF-IDF row and text embedding."""
    text: str
    words: sp.csr_matrix
    dense: np.ndarray | None = None


def base_scores(cands: list[Candidate], vote: float) -> np.ndarray:
    """The generator's lexical score: (3-gram cosine + vote * category share) / (1 + vote)."""
    return np.array([(c.lexical + vote * c.share) / (1 + vote) for c in cands])


class CodeReranker:
    """`order(mention, candidates, base) -> scores` that sort candidates best first."""

    def __init__(self, vectorizer: TfidfVectorizer, code_ids: list[str], code_matrix: sp.csr_matrix,
                 category_sums: sp.csr_matrix, code_embeddings: np.ndarray | None = None, model=None,
                 info: dict | None = None):
        self.vectorizer, self.code_ids = vectorizer, code_ids
        self.code_row = {c: i for i, c in enumerate(code_ids)}
        self.categories = sorted({category_of(c) for c in code_ids})
        self.category_row = {c: i for i, c in enumerate(self.categories)}
        # category documents = sum of their codes' rows, kept unnormalised so that one code's row
        # can be swapped out while fitting; L2-normalised for scoring
        self.code_matrix, self.category_sums = code_matrix, category_sums
        self.category_matrix = _l2_rows(category_sums)
        self.code_embeddings = code_embeddings  # float16 [codes, d], L2-normalised
        self.category_embeddings = None
        if code_embeddings is not None:
            cat = np.zeros((len(self.categories), code_embeddings.shape[1]), dtype=np.float32)
            np.add.at(cat, [self.category_row[category_of(c)] for c in code_ids], code_embeddings.astype(np.float32))
            self.category_embeddings = cat / np.maximum(np.linalg.norm(cat, axis=1, keepdims=True), 1e-9)
        self.model, self.info = model, info or {}
        self._embedder = None

    @classmethod
    def from_kb(cls, kb, dense: bool = True) -> "CodeReranker":
        """Word TF-IDF of every code's aliases and category, and (dense) text embeddings of each
        code's name through the project's cached text encoder. Not fitted yet."""
        code_ids = sorted(kb.cui_to_entity)
        vectorizer = TfidfVectorizer(analyzer=word_analyzer, sublinear_tf=True, dtype=np.float32)
        code_matrix = vectorizer.fit_transform([code_document(kb, c) for c in code_ids]).tocsr()
        cat_row = {c: i for i, c in enumerate(sorted({category_of(c) for c in code_ids}))}
        member = sp.csr_matrix((np.ones(len(code_ids), dtype=np.float32),
                                ([cat_row[category_of(c)] for c in code_ids], np.arange(len(code_ids)))),
                               shape=(len(cat_row), len(code_ids)))
        emb = None
        if dense:

            emb = cached_text_embeddings([kb.cui_to_entity[c].canonical_name for c in code_ids])
            emb = (emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-9)).astype(np.float16)
        return cls(vectorizer, code_ids, code_matrix, (member @ code_matrix).tocsr(), emb)

    # ---- mentions and features --------------------------------------------------------------
    def mentions(self, texts: list[str]) -> list[Mention]:
        if not texts:
            return []
        words = self.vectorizer.transform(texts).tocsr()
        dense = self._embed(texts)
        return [Mention(t, words[i], None if dense is None else dense[i]) for i, t in enumerate(texts)]

    def _embed(self, texts: list[str]) -> np.ndarray | None:
        if self.code_embeddings is None or not texts:
            return None
        if self._embedder is None:

            self._embedder = TextEmbedder(batch_size=64)
        e = self._embedder.embed(texts, progress=False)
        return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-9)

    def features(self, mention: Mention, cands: list[Candidate], base: np.ndarray,
                 replace: tuple[str, sp.csr_matrix] | None = None) -> np.ndarray:
        """[len(cands), len(FEATURES)]. `replace` = (code_id, document row): score as if that code
        had these aliases (fitting: a query synonym must not be in its own code's document)."""
        n = len(cands)
        rows = np.array([self.code_row.get(c.code_id, -1) for c in cands])
        cats = np.array([self.category_row.get(category_of(c.code_id), -1) for c in cands])
        f = np.zeros((n, len(FEATURES)))
        f[:, 0] = [c.lexical for c in cands]
        f[:, 1] = [c.share for c in cands]
        f[:, 2] = [min(c.alias_rank, RANK_DERIVED + 1) for c in cands]
        f[:, 3] = [c.is_group for c in cands]
        if mention.words.nnz:
            q = mention.words.T.toarray().ravel()
            ok, okc = rows >= 0, cats >= 0
            f[ok, 4] = self.code_matrix[rows[ok]] @ q
            f[okc, 5] = self.category_matrix[cats[okc]] @ q
            if replace is not None and replace[0] in self.code_row:
                cid, new_row = replace
                cat_row = (self.category_sums[self.category_row[category_of(cid)]]
                           - self.code_matrix[self.code_row[cid]] + new_row)
                norm = float(np.sqrt(cat_row.multiply(cat_row).sum())) or 1.0
                for i, c in enumerate(cands):
                    if c.code_id == cid:
                        f[i, 4] = float((new_row @ q)[0])
                    if category_of(c.code_id) == category_of(cid):
                        f[i, 5] = float((cat_row @ q)[0]) / norm
        if mention.dense is not None and self.code_embeddings is not None:
            ok, okc = rows >= 0, cats >= 0
            f[ok, 6] = self.code_embeddings[rows[ok]].astype(np.float32) @ mention.dense
            f[okc, 7] = self.category_embeddings[cats[okc]] @ mention.dense
        for j, src in zip(range(8, 13), (0, 4, 5, 6, 7)):
            f[:, j] = f[:, src] - f[:, src].max()
        f[:, 13] = np.argsort(np.argsort(-base, kind="stable"), kind="stable") / n
        f[:, 14] = len(word_analyzer(mention.text))
        f[:, 15] = f[:, 0].max()
        return f

    def order(self, mention: Mention, cands: list[Candidate], base: np.ndarray) -> np.ndarray:
        """Scores in [0, 1] whose descending order is: best category first (by the model), then the
        lexical order inside each category."""
        p = self.model.predict_proba(self.features(mention, cands, base))[:, 1]
        cat_p: dict[str, float] = {}
        for c, pi in zip(cands, p):
            cat_p[category_of(c.code_id)] = max(cat_p.get(category_of(c.code_id), 0.0), pi)
        key = np.array([cat_p[category_of(c.code_id)] for c in cands])
        # a strictly decreasing score along (category probability, lexical score) order
        idx = sorted(range(len(cands)), key=lambda i: (-key[i], -base[i], cands[i].code_id))
        out = np.empty(len(cands))
        out[idx] = key[idx] / max(key.max(), 1e-12) - 1e-6 * np.arange(len(cands))
        return out

    # ---- fitting ---------------------------------------------------------------------------
    def fit(self, generator, kb, n_queries: int = 6000, seed: int = 0, k: int = 30) -> dict:
        """Fit on KB synonyms queried as if held out (see the module doc)."""
        from sklearn.ensemble import HistGradientBoostingClassifier

        queries = training_queries(kb, n_queries, seed)
        if not queries:
            raise ValueError("the KB has no single-code synonyms to fit a re-ranker on")
        excluded = [unseen_pairs(kb, q, gold) for q, gold in queries]
        tables = generator.candidate_tables([q for q, _ in queries], k, exclude=excluded)
        mentions = self.mentions([clean_alias(q) for q, _ in queries])
        own = self.vectorizer.transform([code_document(kb, gold, drop={a for a, _ in ex})
                                         for (_, gold), ex in zip(queries, excluded)]).tocsr()
        X, y, hit_base = [], [], []
        for i, ((_, gold), cands) in enumerate(zip(queries, tables)):
            if not cands:
                continue
            base = base_scores(cands, generator.vote)
            X.append(self.features(mentions[i], cands, base, replace=(gold, own[i])))
            labels = np.array([category_of(c.code_id) == category_of(gold) for c in cands])
            y.append(labels)
            hit_base.append(labels[int(np.argmax(base))])
        X, y = np.concatenate(X), np.concatenate(y)
        if y.all() or not y.any():
            raise ValueError("fitting data has a single class: the KB is too small to fit a re-ranker")
        model = HistGradientBoostingClassifier(learning_rate=0.1, max_iter=200, max_leaf_nodes=31,
                                               random_state=seed).fit(X, y)
        # score with the exported arrays from now on: the same numbers as model.predict_proba (bit
        # for bit in tests/test_linker_persist.py), and the same object a loaded re-ranker has
        self.model = GradientBoostedTrees.from_sklearn(model)
        self.info = {"queries": len(queries), "rows": int(len(y)), "seed": seed, "k": k,
                     "fit_category_accuracy_lexical": float(np.mean(hit_base)),
                     "dense": self.code_embeddings is not None}
        return self.info

    # ---- persistence ------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        if self.model is None:
            raise ValueError("the re-ranker is not fitted: nothing to save")
        trees = (self.model if isinstance(self.model, GradientBoostedTrees)
                 else GradientBoostedTrees.from_sklearn(self.model))
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        save_tfidf(self.vectorizer, d, "word_tfidf")
        trees.save(d / "trees.npz")
        sp.save_npz(d / "code_words.npz", self.code_matrix)
        sp.save_npz(d / "category_words.npz", self.category_sums)
        if self.code_embeddings is not None:
            np.save(d / "code_embeddings.npy", self.code_embeddings)
        # written last: `exists` means complete
        (d / "reranker.json").write_text(json.dumps({"format": FORMAT, "features": list(FEATURES),
                                                     "code_ids": self.code_ids, "info": self.info}))

    @classmethod
    def load(cls, directory: str | Path) -> "CodeReranker":
        d = Path(directory)
        meta = json.loads((d / "reranker.json").read_text())
        # checked before any other file is read: an older directory (format 2 pickled its model in
        # reranker.joblib) is refused, never unpickled
        if meta.get("format") != FORMAT or meta["features"] != list(FEATURES):
            raise ValueError(f"{d} holds a re-ranker of another format; delete it to refit")
        vectorizer = load_tfidf(d, "word_tfidf", analyzer=word_analyzer)
        model = GradientBoostedTrees.load(d / "trees.npz")
        emb_path = d / "code_embeddings.npy"
        emb = np.load(emb_path, allow_pickle=False) if emb_path.exists() else None
        return cls(vectorizer, meta["code_ids"], sp.load_npz(d / "code_words.npz").tocsr(),
                   sp.load_npz(d / "category_words.npz").tocsr(), emb, model, meta.get("info"))

    @staticmethod
    def exists(directory: str | Path) -> bool:
        return (Path(directory) / "reranker.json").exists()


def _l2_rows(m: sp.spmatrix) -> sp.csr_matrix:
    m = sp.csr_matrix(m, dtype=np.float32)
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sp.diags(1.0 / norms).dot(m).tocsr().astype(np.float32)


def code_document(kb, code_id: str, drop: set[str] = frozenset()) -> str:
    """All names of a code in one text (the re-ranker's word-level view of it)."""
    ent = kb.cui_to_entity[code_id]
    return " | ".join(n for n in [ent.canonical_name, *ent.aliases] if clean_alias(n) not in drop)


def training_queries(kb, n: int, seed: int = 0) -> list[tuple[str, str]]:
    """(synonym, its code) pairs from the KB: synonyms (not names, abbreviations or derived forms)
    of exactly one code, chosen deterministically by a seeded hash."""
    pairs = []
    for (alias, cid), rank in kb.alias_rank.items():
        if rank == RANK_SYNONYM and len(kb.alias_to_cuis.get(alias, ())) == 1 and len(alias) >= 4:
            # the project's hash helper in its sha1 form (first 8 bytes of sha1(key)) orders like the
            # sha1 hex digest this used before, ties aside: none among the 222,489 (alias, code) pairs
            # of the project KB, so the fitted re-ranker and its figures are unchanged
            pairs.append((stable_fraction(f"{seed}|{cid}|{alias}", salt=None, algorithm="sha1"), alias, cid))
    return [(a, c) for _, a, c in sorted(pairs)[:n]]


def unseen_pairs(kb, synonym: str, code_id: str) -> set[tuple[str, str]]:
    """The (alias, code) pairs the KB would lack had `synonym` been held out of `code_id`: the
    synonym and those of its derived forms that no other alias of the code produces (mirrors
    kb.build_knowledge_base, so fitting queries look like held-out terms)."""
    syn = clean_alias(synonym)
    others: set[str] = set()
    for alias in kb.cui_to_entity[code_id].aliases:
        rank = kb.rank(alias, code_id)
        if alias != syn and rank < RANK_DERIVED:
            others.add(alias)
            others.update(d for d, _ in derive_aliases(alias, heads=rank == RANK_NAME))
    return {(syn, code_id)} | {(d, code_id) for d, _ in derive_aliases(syn, heads=False) if d not in others}
