"""Candidate generation (scispacy's, with deterministic tie-breaking and a memo) and spelling repair."""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterable

from scispacy.candidate_generation import CandidateGenerator, MentionCandidate

from qa.linker.index import AliasIndex
from qa.linker.kb import RANK_DERIVED, CodeKnowledgeBase, derive_aliases

# Several codes often share an alias at similarity 1.0 ("pneumonia, unspecified organism" is
# the name of both J18 and J18.9). scispacy then orders them by concept id. We subtract tiny
# penalties instead so that the order is meaningful: official name < synonym < abbreviation <
# derived form, then assignable codes before grouping rows, then shorter codes. Penalties sum
# to < 1e-3, so they only reorder near-ties.
_RANK_PENALTY = 1e-4
_GROUP_PENALTY = 1e-5
_LENGTH_PENALTY = 1e-7


def _category(concept_id: str) -> str:
    system, code = concept_id.split(":", 1)
    return f"{system}:{code.replace('.', '')[:3]}"


class RankedCandidateGenerator(CandidateGenerator):
    """scispacy's CandidateGenerator over a project-built index, scored for linking codes.

    For each mention the ANN neighbours (aliases) are mapped to codes as scispacy does, and
    each code gets
        score = (max alias cosine - tie penalties + vote * category share) / (1 + vote)
    where `category share` is the fraction of the neighbours' weight (cosine^4) that falls
    in the code's 3-character category: when a mention is equally close to "ectopic ureter"
    and to two aliases under I49, the category with more support wins. A mention that is
    exactly an alias is scored by cosine and tie penalties alone (no vote). Mentions are also queried without "NOS"/"unspecified"-type
    qualifiers (the KB holds such shortened forms), and results are memoised.
    """

    def __init__(self, kb: CodeKnowledgeBase, index: AliasIndex, *, vote: float = 0.2, ef_search: int = 100,
                 memo_size: int = 200_000):
        # CandidateGenerator falls back to *downloading* UMLS when an argument is falsy: refuse that
        if not index.concept_aliases or not kb.cui_to_entity:
            raise ValueError("empty knowledge base: nothing to link to")
        super().__init__(ann_index=index.ann_index, tfidf_vectorizer=index.vectorizer,
                         ann_concept_aliases_list=index.concept_aliases, kb=kb)
        self.vote, self.ef_search = vote, ef_search
        self.memo: dict[tuple[str, int, int], list[MentionCandidate]] = {}
        self.memo_size = memo_size
        self._alias_codes: dict[int, list[tuple[str, float, str]]] = {}

    def _codes_of(self, alias_index: int) -> list[tuple[str, float, str]]:
        """(code, tie penalty, category) for every code of an indexed alias (memoised)."""
        out = self._alias_codes.get(alias_index)
        if out is None:
            alias = self.ann_concept_aliases_list[alias_index]
            out = []
            for cid in sorted(self.kb.alias_to_cuis[alias]):
                ent = self.kb.cui_to_entity[cid]
                kind = ent.types[1] if len(ent.types) > 1 else "code"
                pen = (_RANK_PENALTY * self.kb.rank(alias, cid) + _GROUP_PENALTY * (kind == "group")
                       + _LENGTH_PENALTY * min(len(cid), 20))
                out.append((cid, pen, _category(cid)))
            self._alias_codes[alias_index] = out
        return out

    def _score(self, text: str, neighbours: list[tuple[int, float]]) -> list[MentionCandidate]:
        best: dict[str, tuple[float, str]] = {}
        votes: dict[str, float] = {}
        # HNSW search is approximate: short aliases ("mi", "tb") have two or three 3-grams and
        # are easily missed, so an exact alias never depends on the ANN finding it
        exact = self._alias_id.get(text)
        merged: dict[int, float] = {} if exact is None else {exact: 1.0}
        for a_i, sim in neighbours:  # the same alias may come back for several query variants
            if sim > merged.get(a_i, -1.0):
                merged[a_i] = sim
        for a_i, sim in merged.items():
            codes = self._codes_of(a_i)
            alias = self.ann_concept_aliases_list[a_i]
            w = sim ** 4 / len(codes)
            for cid, pen, cat in codes:
                votes[cat] = votes.get(cat, 0.0) + w
                if sim - pen > best.get(cid, (-9.0, ""))[0]:
                    best[cid] = (sim - pen, alias)
        total = sum(votes.values()) or 1.0
        # an exact alias decides on its own: voting would favour big categories whose many
        # aliases merely contain the mention ("diabetes mellitus" -> E13 "Other specified ...")
        vote = 0.0 if exact is not None else self.vote
        out = []
        for cid, (sim, alias) in best.items():
            score = (sim + vote * votes[_category(cid)] / total) / (1 + vote)
            out.append(MentionCandidate(cid, [alias], [score]))
        return sorted(out, key=lambda c: c.concept_id)

    @property
    def _alias_id(self) -> dict[str, int]:
        if not hasattr(self, "_alias_id_map"):
            self._alias_id_map = {a: i for i, a in enumerate(self.ann_concept_aliases_list)}
        return self._alias_id_map

    def __call__(self, mention_texts: list[str], k: int, ef_search: int | None = None) -> list[list[MentionCandidate]]:
        ef = ef_search or self.ef_search
        keys = [(" ".join(m.lower().split()), k, ef) for m in mention_texts]
        todo = sorted({key for key in keys if key not in self.memo})
        if todo:
            if len(self.memo) + len(todo) > self.memo_size:
                self.memo.clear()
            queries, owner = [], []
            for i, (text, _, _) in enumerate(todo):
                for q in [text] + [d for d, r in derive_aliases(text, heads=False) if r == RANK_DERIVED]:
                    queries.append(q)
                    owner.append(i)
            self.ann_index.setQueryTimeParams({"efSearch": ef})
            neighbours, distances = self.nmslib_knn_with_zero_vectors(self.vectorizer.transform(queries), k)
            merged: list[list[tuple[int, float]]] = [[] for _ in todo]
            for o, nb, dist in zip(owner, neighbours, distances):
                if nb is not None:
                    merged[o].extend((int(a), 1.0 - float(d)) for a, d in zip(nb, dist))
            for key, nbs in zip(todo, merged):
                self.memo[key] = self._score(key[0], nbs)
        return [self.memo[key] for key in keys]

    def best(self, mention_texts: list[str], k: int, ef_search: int | None = None) -> list[tuple[str | None, float]]:
        """(top concept, score) per mention, ordered as EntityLinker orders them (score, then
        concept id); (None, 0.0) when nothing shares a 3-gram with the mention."""
        out = []
        for cands in self(mention_texts, k, ef_search):
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
