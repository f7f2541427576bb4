"""Candidate generation (scispacy's, with deterministic tie-breaking and a memo) and spelling repair."""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterable

from scispacy.candidate_generation import CandidateGenerator, MentionCandidate

from qa.linker.index import AliasIndex
from qa.linker.kb import RANK_DERIVED, CodeKnowledgeBase, derive_aliases
from qa.linker.rerank import Candidate, CodeReranker, Mention, base_scores
from qa.linker.rerank import category_of as _category

# Several codes often share an alias at similarity 1.0 ("pneumonia, unspecified organism" is
# the name of both J18 and J18.9). scispacy then orders them by concept id. We subtract tiny
# penalties instead so that the order is meaningful: official name < synonym < abbreviation <
# derived form, then assignable codes before grouping rows, then shorter codes. Penalties sum
# to < 1e-3, so they only reorder near-ties.
_RANK_PENALTY = 1e-4
_GROUP_PENALTY = 1e-5
_LENGTH_PENALTY = 1e-7


class RankedCandidateGenerator(CandidateGenerator):
    """scispacy's CandidateGenerator over a project-built index, scored for linking codes.

    For each mention the ANN neighbours (aliases) are mapped to codes as scispacy does, and
    each code gets
        score = (max alias cosine - tie penalties + vote * category share) / (1 + vote)
    where `category share` is the fraction of the neighbours' weight (cosine^4) that falls
    in the code's 3-character category: when a mention is equally close to "ectopic ureter"
    and to two aliases under I49, the category with more support wins. A mention that is
    exactly an alias is scored by cosine and tie penalties alone (no vote). Mentions are also
    queried without "NOS"/"unspecified"-type qualifiers (the KB holds such shortened forms), and
    results are memoised. With a `reranker` (qa/linker/rerank.py), a mention that is not exactly
    an alias has its candidates re-ordered by the learned re-ranker.
    """

    def __init__(self, kb: CodeKnowledgeBase, index: AliasIndex, *, vote: float = 0.2, ef_search: int = 100,
                 memo_size: int = 200_000, reranker: CodeReranker | None = None):
        # CandidateGenerator falls back to *downloading* UMLS when an argument is falsy: refuse that
        if not index.concept_aliases or not kb.cui_to_entity:
            raise ValueError("empty knowledge base: nothing to link to")
        super().__init__(ann_index=index.ann_index, tfidf_vectorizer=index.vectorizer,
                         ann_concept_aliases_list=index.concept_aliases, kb=kb)
        self.vote, self.ef_search = vote, ef_search
        self.reranker = reranker
        self.memo: dict[tuple[str, int, int, bool], list[MentionCandidate]] = {}
        self.memo_size = memo_size
        self._alias_codes: dict[int, list[tuple[str, float, str, int, bool]]] = {}

    def _codes_of(self, alias_index: int) -> list[tuple[str, float, str, int, bool]]:
        """(code, tie penalty, category, alias rank, is group) for every code of an indexed alias (memoised)."""
        out = self._alias_codes.get(alias_index)
        if out is None:
            alias = self.ann_concept_aliases_list[alias_index]
            out = []
            for cid in sorted(self.kb.alias_to_cuis[alias]):
                ent = self.kb.cui_to_entity[cid]
                group = (ent.types[1] if len(ent.types) > 1 else "code") == "group"
                rank = self.kb.rank(alias, cid)
                pen = _RANK_PENALTY * rank + _GROUP_PENALTY * group + _LENGTH_PENALTY * min(len(cid), 20)
                out.append((cid, pen, _category(cid), rank, group))
            self._alias_codes[alias_index] = out
        return out

    def _table(self, text: str, neighbours: list[tuple[int, float]],
               exclude: set[tuple[str, str]] | None = None) -> tuple[bool, list[Candidate]]:
        """(is the mention exactly an alias, one Candidate per code reached through the neighbours).
        `exclude`: (alias, code) pairs to ignore (fitting the re-ranker on KB synonyms)."""
        # HNSW search is approximate: short aliases ("mi", "tb") have two or three 3-grams and
        # are easily missed, so an exact alias never depends on the ANN finding it
        exact = None if exclude else self._alias_id.get(text)
        merged: dict[int, float] = {} if exact is None else {exact: 1.0}
        for a_i, sim in neighbours:  # the same alias may come back for several query variants
            if sim > merged.get(a_i, -1.0):
                merged[a_i] = sim
        best: dict[str, tuple[float, int, bool, str]] = {}
        votes: dict[str, float] = {}
        for a_i, sim in merged.items():
            codes = self._codes_of(a_i)
            w = sim ** 4 / len(codes)
            alias = self.ann_concept_aliases_list[a_i]
            for cid, pen, cat, rank, group in codes:
                if exclude and (alias, cid) in exclude:
                    continue
                votes[cat] = votes.get(cat, 0.0) + w
                if sim - pen > best.get(cid, (-9.0,))[0]:
                    best[cid] = (sim - pen, rank, group, alias)
        total = sum(votes.values()) or 1.0
        cands = [Candidate(cid, lex, votes[_category(cid)] / total, rank, group, alias)
                 for cid, (lex, rank, group, alias) in sorted(best.items())]
        return exact is not None, cands

    def _score(self, text: str, neighbours: list[tuple[int, float]], mention: Mention | None = None
               ) -> list[MentionCandidate]:
        exact, cands = self._table(text, neighbours)
        # an exact alias decides on its own: voting would favour big categories whose many
        # aliases merely contain the mention ("diabetes mellitus" -> E13 "Other specified ...")
        scores = base_scores(cands, 0.0 if exact else self.vote)
        if self.reranker is not None and mention is not None and not exact and len(cands) > 1:
            # the re-ranker decides the order; the top keeps the mention's lexical confidence
            # (what the link threshold is about)
            scores = scores.max() * self.reranker.order(mention, cands, scores)
        return [MentionCandidate(c.code_id, [c.alias], [float(s)]) for c, s in zip(cands, scores)]

    @property
    def _alias_id(self) -> dict[str, int]:
        if not hasattr(self, "_alias_id_map"):
            self._alias_id_map = {a: i for i, a in enumerate(self.ann_concept_aliases_list)}
        return self._alias_id_map

    def _neighbours(self, texts: list[str], k: int, ef: int) -> list[list[tuple[int, float]]]:
        """ANN neighbours (alias index, cosine) of each text and of its qualifier-stripped variants."""
        queries, owner = [], []
        for i, text in enumerate(texts):
            for q in [text] + [d for d, r in derive_aliases(text, heads=False) if r == RANK_DERIVED]:
                queries.append(q)
                owner.append(i)
        self.ann_index.setQueryTimeParams({"efSearch": ef})
        neighbours, distances = self.nmslib_knn_with_zero_vectors(self.vectorizer.transform(queries), k)
        merged: list[list[tuple[int, float]]] = [[] for _ in texts]
        for o, nb, dist in zip(owner, neighbours, distances):
            if nb is not None:
                merged[o].extend((int(a), 1.0 - float(d)) for a, d in zip(nb, dist))
        return merged

    def __call__(self, mention_texts: list[str], k: int, ef_search: int | None = None,
                 rerank: bool = True) -> list[list[MentionCandidate]]:
        ef = ef_search or self.ef_search
        rerank = rerank and self.reranker is not None
        keys = [(" ".join(m.lower().split()), k, ef, rerank) for m in mention_texts]
        todo = sorted({key for key in keys if key not in self.memo})
        if todo:
            if len(self.memo) + len(todo) > self.memo_size:
                self.memo.clear()
            texts = [key[0] for key in todo]
            mentions: dict[int, Mention] = {}
            if rerank:
                # exact aliases skip the re-ranker: build mentions (a text embedding each) only for the others
                inexact = [i for i, t in enumerate(texts) if t not in self._alias_id]
                mentions = dict(zip(inexact, self.reranker.mentions([texts[i] for i in inexact])))
            for i, (key, nbs) in enumerate(zip(todo, self._neighbours(texts, k, ef))):
                self.memo[key] = self._score(key[0], nbs, mentions.get(i))
        return [self.memo[key] for key in keys]

    def candidate_tables(self, texts: list[str], k: int, exclude: list[set[tuple[str, str]]] | None = None,
                         ef_search: int | None = None) -> list[list[Candidate]]:
        """Raw candidates per text. `exclude[i]`: (alias, code) pairs text i must not reach (with k
        extra neighbours to make up for them); the exact-alias shortcut is then off."""
        texts = [" ".join(t.lower().split()) for t in texts]
        nbs = self._neighbours(texts, k + 10 if exclude else k, ef_search or self.ef_search)
        return [self._table(t, nb, exclude[i] if exclude else None)[1] for i, (t, nb) in enumerate(zip(texts, nbs))]

    def best(self, mention_texts: list[str], k: int, ef_search: int | None = None,
             rerank: bool = True) -> list[tuple[str | None, float]]:
        """(top concept, score) per mention, ordered as EntityLinker orders them (score, then
        concept id); (None, 0.0) when nothing shares a 3-gram with the mention."""
        out = []
        for cands in self(mention_texts, k, ef_search, rerank):
            if not cands:
                out.append((None, 0.0))
                continue
            top = min(cands, key=lambda c: (-max(c.similarities), c.concept_id))
            out.append((top.concept_id, max(top.similarities)))
        return out


_WORD_RE = re.compile(r"[a-z]+")


def _deletes(word: str, depth: int) -> set[str]:
    out, frontier = set(), {word}
    for _ in range(depth):
        frontier = {w[:i] + w[i + 1:] for w in frontier for i in range(len(w))}
        out |= frontier
    return out


def _osa_distance(a: str, b: str, limit: int) -> int:
    """Optimal-string-alignment edit distance (Levenshtein + adjacent transpositions), capped at limit+1."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2, prev = None, list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if prev2 is not None and i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


class SpellingCorrector:
    """Maps an unknown word to the KB word within edit distance 1 (2 for long words).

    Symmetric-delete lookup (SymSpell idea): a word and its misspelling share a string
    obtained by deleting <= d characters from each, so candidates come from one dict lookup
    per delete instead of a scan of the vocabulary. Ties go to the more frequent KB word.
    """

    def __init__(self, words: Counter, min_len: int = 6, long_len: int = 9, known: Iterable[str] = ()):
        self.words = words
        self.known = set(words) | set(known)
        self.min_len, self.long_len = min_len, long_len
        self._deletes: dict[str, list[str]] = {}
        for w in words:
            if len(w) < min_len - 1:
                continue
            for d in _deletes(w, 2 if len(w) >= long_len - 1 else 1):
                self._deletes.setdefault(d, []).append(w)
        self._memo: dict[str, str | None] = {}

    @classmethod
    def from_aliases(cls, aliases: Iterable[str], known: Iterable[str] = (), **kw) -> "SpellingCorrector":
        counts = Counter(w for a in aliases for w in _WORD_RE.findall(a.lower()) if len(w) >= 3)
        return cls(counts, known=known, **kw)

    def correct(self, word: str) -> str | None:
        """The KB word `word` is a misspelling of, or None (known word, too short, or no close word)."""
        w = word.lower()
        if len(w) < self.min_len or w in self.known or not w.isalpha():
            return None
        if w in self._memo:
            return self._memo[w]
        limit = 2 if len(w) >= self.long_len else 1
        pool = set(self._deletes.get(w, ()))
        for d in _deletes(w, limit):
            pool.update(self._deletes.get(d, ()))
            if d in self.words:
                pool.add(d)
        scored = [(_osa_distance(w, c, limit), -self.words[c], c) for c in pool]
        scored = [s for s in scored if s[0] <= limit]
        best = min(scored)[2] if scored else None
        self._memo[w] = best
        return best
