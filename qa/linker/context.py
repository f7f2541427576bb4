"""Is a mention affirmed, negated, a relative's condition, or only suspected? (NegEx-style cues)

`mention_status(doc, start, end)` looks at the words around the token span [start, end) of a spaCy
Doc and returns one of "affirmed", "negated", "family", "ruleout":

negated   a pre-cue ("no", "denies", "without", "negative for", "free of", "no evidence of", ...)
          earlier in the same clause, or a post-cue ("was ruled out", "negative", "excluded") after
          the mention in the same clause, within a few words
family    a relative ("mother", "brother", "family history of", ...) earlier in the same sentence,
          or "in his/her <relative>" right after
ruleout   a pre-cue ("rule out", "possible", "suspected", "concern for", "evaluate for", ...) earlier
          in the same clause
Clauses end at . ; : and at "but", "however", "although", "though", "except"; a comma also ends the
scope of negation and rule-out cues (not of family cues: "Sister with ovarian cancer, BRCA testing
advised"). Negation wins over family ("no family history of diabetes"), family over rule-out. Cue
words inside the mention itself ("without complications" in a code title) are ignored.
"""

from __future__ import annotations

from spacy.tokens import Doc

AFFIRMED, NEGATED, FAMILY, RULEOUT = "affirmed", "negated", "family", "ruleout"

_NEG_PRE = ("no", "not", "denies", "denied", "deny", "denying", "without", "negative for", "free of",
            "no evidence of", "no signs of", "no sign of", "absence of", "never had", "ruled out for",
            "no history of", "no hx of", "nor")
_NEG_POST = ("ruled out", "was ruled out", "is ruled out", "were ruled out", "negative", "excluded",
             "was excluded", "absent", "unlikely")
_RULEOUT_PRE = ("rule out", "r/o", "possible", "possibly", "probable", "probably", "suspected", "suspect",
                "suspicion of", "suspicious for", "concern for", "concerning for", "evaluate for",
                "evaluation for", "questionable", "query", "cannot exclude", "presumed", "likely", "?")
_FAMILY = ("mother", "father", "mom", "dad", "brother", "brothers", "sister", "sisters", "sibling", "siblings",
           "grandmother", "grandfather", "grandma", "grandpa", "grandparent", "grandparents", "aunt", "aunts",
           "uncle", "uncles", "cousin", "cousins", "son", "sons", "daughter", "daughters", "parents", "parent",
           "family history", "family hx", "fhx", "maternal", "paternal", "relative", "relatives", "twin")
_CLAUSE_END = {".", ";", ":", "but", "however", "although", "though", "except", "!"}
_POST_WINDOW = 4


def _phrases(words: tuple[str, ...]) -> list[tuple[str, ...]]:
    return sorted({tuple(w.split()) for w in words}, key=len, reverse=True)


_NEG_PRE_T, _NEG_POST_T = _phrases(_NEG_PRE), _phrases(_NEG_POST)
_RULEOUT_T, _FAMILY_T = _phrases(_RULEOUT_PRE), _phrases(_FAMILY)


def _find(words: list[str], cues: list[tuple[str, ...]]) -> list[tuple[int, int]]:
    """(start, end) word positions of every cue occurrence."""
    out = []
    for i in range(len(words)):
        for cue in cues:
            if tuple(words[i: i + len(cue)]) == cue:
                out.append((i, i + len(cue)))
                break
    return out


_JOINERS = {"or", "and", "nor", ",", "/", "any", "a", "an", "the", "of"}


def mention_status(doc: Doc, start: int, end: int, others: list[tuple[int, int]] = ()) -> str:
    """Status of the mention at tokens [start, end). `others`: the Doc's other mention spans; a
    negation or rule-out pre-cue covers the first mention after it and the mentions joined to that one
    by "or", "and", "nor" or commas ("no history of stroke or seizures"), not a mention further on
    ("concern for sepsis in a febrile infant": the fever is affirmed)."""
    words = [t.lower_ for t in doc]
    # the sentence around the mention (no parser: sentence = between . ; !)
    s = start
    while s > 0 and words[s - 1] not in {".", ";", "!"}:
        s -= 1
    e = end
    while e < len(words) and words[e] not in {".", ";", "!"}:
        e += 1

    def clause_before(stop_comma: bool) -> int:
        i = start
        while i > s and words[i - 1] not in _CLAUSE_END and not (stop_comma and words[i - 1] == ","):
            i -= 1
        return i

    def clause_after() -> int:
        i = end
        while i < e and words[i] not in _CLAUSE_END and words[i] != ",":
            i += 1
        return i

    def covered(cues, lo: int) -> bool:
        """a pre-cue in words[lo:start] whose scope reaches the mention"""
        inside = sorted((a, b) for a, b in others if lo <= a and b <= start and (a, b) != (start, end))
        for cs, ce in _find(words[lo:start], cues):
            cs, ce = cs + lo, ce + lo
            between = [(a, b) for a, b in inside if a >= ce]
            pos, ok = start, True
            for a, b in reversed(between):  # walk back over the mentions between cue and this one
                if not all(w in _JOINERS for w in words[b:pos]):
                    ok = False
                    break
                pos = a
            if ok:
                return True
        return False

    after = words[end: min(clause_after(), end + _POST_WINDOW)]
    if covered(_NEG_PRE_T, clause_before(True)) or _find(after, _NEG_POST_T):
        return NEGATED
    if _find(words[s: start], _FAMILY_T) or (e - end >= 3 and words[end] == "in"
                                             and _find(words[end + 1: end + 4], _FAMILY_T)):
        return FAMILY
    if covered(_RULEOUT_T, clause_before(True)):
        return RULEOUT
    return AFFIRMED
