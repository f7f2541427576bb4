"""Candidate generation (scispacy's, with deterministic tie-breaking and a memo) and spelling repair."""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterable

from scispacy.candidate_generation import CandidateGenerator, MentionCandidate

from qa.linker.index import AliasIndex
from qa.linker.kb import CodeKnowledgeBase

# Several codes often share an alias at similarity 1.0 ("pneumonia, unspecified organism" is
# the name of both J18 and J18.9). scispacy then orders them by concept id. We subtract tiny
# penalties instead so that the order is meaningful: official name < synonym < abbreviation <
# derived form, then assignable codes before grouping rows, then shorter codes. Penalties sum
# to < 1e-3, so they only reorder near-ties.
_RANK_PENALTY = 1e-4
_GROUP_PENALTY = 1e-5
_LENGTH_PENALTY = 1e-7


class RankedCandidateGenerator(CandidateGenerator):
    """scispacy CandidateGenerator over a project-built index, with tie-breaking and a result memo."""

    def __init__(self, kb: CodeKnowledgeBase, index: AliasIndex, memo_size: int = 200_000):
        # CandidateGenerator falls back to *downloading* UMLS when an argument is falsy: refuse that
        if not index.concept_aliases or not kb.cui_to_entity:
            raise ValueError("empty knowledge base: nothing to link to")
        super().__init__(ann_index=index.ann_index, tfidf_vectorizer=index.vectorizer,
                         ann_concept_aliases_list=index.concept_aliases, kb=kb)
        self.memo: dict[tuple[str, int], list[MentionCandidate]] = {}
        self.memo_size = memo_size
        self._penalty_cache: dict[str, float] = {}

    def _code_penalty(self, cid: str) -> float:
        p = self._penalty_cache.get(cid)
        if p is None:
            ent = self.kb.cui_to_entity[cid]
            kind = ent.types[1] if len(ent.types) > 1 else "code"
            p = _GROUP_PENALTY * (kind == "group") + _LENGTH_PENALTY * min(len(cid), 20)
            self._penalty_cache[cid] = p
        return p

    def _rerank(self, cands: list[MentionCandidate]) -> list[MentionCandidate]:
        out = []
        for c in cands:
            base = self._code_penalty(c.concept_id)
            sims = [s - _RANK_PENALTY * self.kb.rank(a, c.concept_id) - base for a, s in zip(c.aliases, c.similarities)]
            out.append(MentionCandidate(c.concept_id, c.aliases, sims))
        return out

    def _with_exact(self, text: str, cands: list[MentionCandidate]) -> list[MentionCandidate]:
        """Add the codes whose alias is exactly `text` at similarity 1.0.

        HNSW search is approximate: short aliases ("mi", "tb") have two or three 3-grams and
        are easily missed, so an exact alias must not depend on the ANN finding it."""
        exact = self.kb.alias_to_cuis.get(" ".join(text.split()))
        if not exact:
            return cands
        by_id = {c.concept_id: c for c in cands}
        for cid in exact:
            c = by_id.get(cid)
            if c is None or text not in c.aliases:
                by_id[cid] = MentionCandidate(cid, [text] + (c.aliases if c else []),
                                              [1.0] + (c.similarities if c else []))
        return sorted(by_id.values(), key=lambda c: c.concept_id)

    def __call__(self, mention_texts: list[str], k: int) -> list[list[MentionCandidate]]:
        keys = [(m.lower().strip(), k) for m in mention_texts]
        todo = sorted({key for key in keys if key not in self.memo})
        if todo:
            if len(self.memo) + len(todo) > self.memo_size:
                self.memo.clear()
            fresh = super().__call__([t for t, _ in todo], k)
            for (text, _), cands in zip(todo, fresh):
                self.memo[(text, k)] = self._rerank(self._with_exact(text, cands))
        return [self.memo[key] for key in keys]

    def best(self, mention_texts: list[str], k: int) -> list[tuple[str | None, float]]:
        """(top concept, score) per mention, ordered as EntityLinker orders them (score, then
        concept id); (None, 0.0) when nothing shares a 3-gram with the mention."""
        out = []
        for cands in self(mention_texts, k):
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
