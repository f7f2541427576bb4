"""Whole-phrase mentions: a detected mention grown over its attached site, laterality and "with"
words, and linked by which code's words the whole phrase supports.

Growing: from a mention ("carcinoma"), words to its left (up to 3 content or side words: "left",
"gastric") and to its right through a connector ("of", "in", "on", "involving", "affecting", "at",
"to", "with", "arising in") over content, side, determiner and filler words ("moderately
differentiated"), up to `MAX_RIGHT` tokens. Every grown phrase that ends on a content word is a
candidate.

Linking a phrase (`PhraseIndex.link`): word-level, over every KB alias (and the switched-on synonym
sources). Words are lower-cased, British spellings mapped, cut to 6 characters (as the re-ranker
does); ICD filler ("unspecified", "other", "site", "disease", ...) carries no weight. Each mention
word may also match a few curated equivalents (`ALTERNATES`: "carcinoma" ~ "malignant neoplasm",
"gastric" ~ "stomach", "forearm" ~ "upper limb", "both" ~ "bilateral"). For an alias with words S:

    cover  = idf weight of the mention words S contains (or an equivalent of) / idf of all mention words
    extra  = idf weight of S's words no mention word accounts for / idf of all of S
    score  = cover - 0.25 * extra - 0.03 if the alias says "other"; skipped when the sides disagree
             (mention "left", alias "right"); an alias's "without ..." / "not ..." words (defaults) are dropped

so "osteoarthritis of the right knee" prefers "Unilateral primary osteoarthritis, right knee" (cover 1)
over "Unspecified osteoarthritis, unspecified site" (cover 1/3): a site, joint or side word never
loses to an unspecified-site code. Ties go to an assignable code before a grouping row.

A grown phrase replaces the mention when it explains more of the text (more matched idf weight) with
cover >= `min_cover`. Laterality (`lateral_code`): when the phrase names a side and the chosen code's
title does not, the sibling code that differs by that side is taken (I82.409 -> I82.402 for "left").
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable, Mapping

_WORD = re.compile(r"[a-z0-9]+")
_BRITISH = (("oesoph", "esoph"), ("haem", "hem"), ("anaem", "anem"), ("leukaem", "leukem"), ("tumour", "tumor"),
            ("oedema", "edema"), ("paediat", "pediat"), ("diarrhoea", "diarrhea"), ("faec", "fec"),
            ("oestr", "estr"), ("apnoea", "apnea"), ("ischaem", "ischem"), ("coeliac", "celiac"))
NEUTRAL = frozenset(
    "a an and as at by for from in into of on or the to with unspecified other specified site sites part parts "
    "nos nec elsewhere classified not disease diseases disorder disorders involvement condition region "
    "including initial encounter its his her their both's female primary".split())
SIDES = {"left": "left", "right": "right", "bilate": "bilateral", "both": "bilateral"}
# mention word (6-character stem) -> stems of title words it may stand for
ALTERNATES: dict[str, tuple[str, ...]] = {
    # histology named the way ICD-10-CM titles do not
    "carcin": ("malign", "neopla"), "adenoc": ("malign", "neopla", "carcin"), "cancer": ("malign", "neopla"),
    "malign": ("malign", "neopla"), "metast": ("second",), "tumor": ("neopla",),
    "degene": ("osteoart",),
    # organ adjectives and everyday site names -> the title's noun
    "semino": ("malign", "neopla"), "gliobl": ("malign", "neopla"), "sarcom": ("malign", "neopla"),
    "ductal": ("intrad",), "colon": ("large", "intest"), "coliti": ("entero",),
    "gastri": ("stomac",), "stomac": ("gastri",), "renal": ("kidney",), "kidney": ("renal",),
    "hepati": ("liver",), "hepato": ("liver",), "liver": ("hepati",), "pulmon": ("lung",),
    "lung": ("pulmon", "bronch"), "cardia": ("heart", "myocar"), "heart": ("cardia",), "cerebr": ("brain",),
    "brain": ("cerebr",), "coloni": ("colon",), "rectal": ("rectum",), "ovaria": ("ovary",), "ovary": ("ovaria",),
    "laryng": ("larynx",), "larynx": ("laryng",), "testic": ("testis",), "testis": ("testic",),
    "uterin": ("uterus", "uteri"), "endome": ("corpus", "uteri"), "cervic": ("cervix",), "nasal": ("nose",),
    "oral": ("mouth",), "biliar": ("bile",), "vulvar": ("vulva",), "penile": ("penis",), "anal": ("anus",),
    "spinal": ("spine",), "spine": ("spinal", "verteb"), "femora": ("femur",), "tibial": ("tibia",),
    "bowel": ("intest", "colon"), "womb": ("uterus",), "gullet": ("esopha",),
    "forear": ("upper", "limb", "extrem"), "arm": ("upper", "limb", "extrem"), "leg": ("lower", "limb", "extrem"),
    "thigh": ("lower", "limb", "extrem", "femur"), "hip": ("femur",),
    "calf": ("lower", "leg"), "shin": ("lower", "leg", "tibia"), "toe": ("ankle", "foot"), "toes": ("toe", "ankle", "foot"),
    "foot": ("ankle",), "ankle": ("foot",), "heel": ("midfoo",), "armpit": ("axilla",), "tailbo": ("sacral", "coccyx"),
    "back": ("trunk",), "chest": ("trunk", "thorax"), "belly": ("abdome",), "cheek": ("face",), "forehe": ("face",),
    "thumb": ("first", "carpom", "hand"), "finger": ("hand",), "fingers": ("finger", "hand"), "knees": ("knee",),
    "hips": ("hip",), "base": ("first", "carpom"), "both": ("bilate",), "diabet": ("diabet",), "clot": ("thromb", "emboli"),
    "stone": ("calcul",), "gallst": ("calcul", "gallbl"), "stones": ("stone", "calcul"), "lupus": ("erythe", "system"), "nephri": ("glomer", "kidney", "renal"),
}
FILLER = frozenset("moderately well poorly differentiated invasive infiltrating nodular primary grade "
                   "measuring small large early advanced arising".split())
# histology detail site codes do not name: counts a third of its weight ("squamous cell carcinoma of the tonsil")
SOFT = frozenset("squamo cell cells basal papill lobula transi clear follic mucino serous skin".split())
SOFT_WEIGHT = 1 / 3
RIGHT_CONNECTORS = frozenset("of in on involving affecting at to with arising within".split())
DETERMINERS = frozenset("the her his their a an its both".split())
MAX_LEFT, MAX_RIGHT = 3, 9
OTHER_PENALTY = 0.03
_OTHER = re.compile(r"\bother\b")
_UNCOMPLICATED = re.compile(r"\buncomplicated\b|without complication")


def _category(cid: str) -> str:
    system, code = cid.split(":", 1)
    return f"{system}:{code.replace('.', '')[:3]}"


def normalize_word(w: str) -> str:
    for a, b in _BRITISH:
        if a in w:
            w = w.replace(a, b)
    return w


# words with these prefixes share their first 6 letters too often ("hyponatremia" / "hyponasality",
# "osteoporosis" / "osteophyte"): they keep 8
_LONG_PREFIX = ("hypo", "hyper", "osteo", "neuro", "poly", "peri", "para", "endo")


def canonical_word(w: str) -> str:
    w = normalize_word(w)
    return "osteoarthritis" if w in ("arthrosis", "osteoarthrosis") else w


def stem(w: str) -> str:
    w = canonical_word(w)
    return w[:8] if w.startswith(_LONG_PREFIX) else w[:6]


def stems(text: str, alias: bool = False) -> list[str]:
    """Stems of the non-neutral words of `text`. For an alias (`alias=True`) the words of a "without ..."
    clause are dropped: they name the default ("... without obstruction"), which a mention never spells out."""
    out, skipping = [], False
    for m in re.finditer(r"[a-z0-9]+|,", text.lower()):
        w = m.group(0)
        if alias and w in ("without", "not"):
            skipping = True
            continue
        if w in (",", "with"):
            skipping = False
            continue
        if skipping or w in NEUTRAL:
            continue
        out.append(stem(w))
    return out


def side_of(stem_set: Iterable[str]) -> set[str]:
    return {SIDES[s] for s in stem_set if s in SIDES}


@dataclass(frozen=True)
class PhraseLink:
    code_id: str
    score: float      # cover - 0.25 * extra
    cover: float      # share of the mention's idf weight the alias accounts for
    matched: float    # idf weight matched
    alias: str


class PhraseIndex:
    """Word-level inverted index over aliases -> codes, for scoring whole phrases."""

    def __init__(self, alias_codes: Mapping[str, Iterable[str]], is_group: Mapping[str, bool],
                 titles: Mapping[str, str]):
        self.aliases: list[str] = sorted(alias_codes)
        self.alias_id = {a: i for i, a in enumerate(self.aliases)}
        self.codes: list[tuple[str, ...]] = [tuple(sorted(alias_codes[a])) for a in self.aliases]
        self.alias_stems: list[frozenset[str]] = [frozenset(stems(a, alias=True)) for a in self.aliases]
        # "Other ..." / "... other specified ..." titles are for named specifics the mention does not give
        self.alias_other: list[bool] = [bool(_OTHER.search(a)) for a in self.aliases]
        self.postings: dict[str, list[int]] = {}
        for i, ss in enumerate(self.alias_stems):
            for s in ss:
                self.postings.setdefault(s, []).append(i)
        n = len(self.aliases)
        self.idf = {s: math.log((n + 1) / (len(p) + 1)) + 1.0 for s, p in self.postings.items()}
        self.default_idf = math.log(n + 1) + 1.0
        self.is_group = dict(is_group)
        self.titles = dict(titles)
        self._title_stems: dict[str, frozenset[str]] = {}
        self._children: dict[str, list[str]] | None = None  # category -> its codes
        self._by_code: dict[str, list[int]] | None = None
        self.memo: dict[str, PhraseLink | None] = {}

    def weight(self, s: str) -> float:
        return self.idf.get(s, self.default_idf)

    def title_stems(self, cid: str) -> frozenset[str]:
        out = self._title_stems.get(cid)
        if out is None:
            out = self._title_stems[cid] = frozenset(stems(self.titles.get(cid, ""), alias=True))
        return out

    def link(self, text: str) -> PhraseLink | None:
        """The code whose aliases best account for the words of `text` (None when no word is known)."""
        key = " ".join(text.lower().split())
        if key in self.memo:
            return self.memo[key]
        out = self._link(key)
        if len(self.memo) > 200_000:
            self.memo.clear()
        self.memo[key] = out
        return out

    def _link(self, text: str) -> PhraseLink | None:
        words = [w for w in stems(text) if w not in FILLER]
        words = list(dict.fromkeys(words))
        if not words:
            return None
        alts = {w: (w, *ALTERNATES.get(w, ())) for w in words}
        weights = {w: max((self.weight(a) for a in alts[w] if a in self.postings), default=self.weight(w))
                      * (SOFT_WEIGHT if w in SOFT else 1.0) for w in words}
        total = sum(weights.values())
        mention_sides = side_of(words)
        # candidates: aliases holding the mention word with the shortest posting list (among words that
        # carry at least a fifth of the weight: an alias missing them cannot reach the cover needed)
        pools = []
        for w in words:
            ids = set()
            for a in alts[w]:
                ids.update(self.postings.get(a, ()))
            if ids and weights[w] >= 0.2 * total:
                pools.append(ids)
        if not pools:
            return None
        cand = min(pools, key=len)
        best = self._best(cand, words, alts, weights, total, mention_sides)
        if best is not None and self.is_group.get(best.code_id, False):
            # a grouping row ("K80.0") -> its best-scoring assignable descendant ("K80.00")
            prefix = best.code_id.replace(".", "")
            leaves = self._descendant_aliases(best.code_id)
            leaf = self._best(leaves, words, alts, weights, total, mention_sides, leaves_only=True, under=prefix)
            if leaf is not None:
                best = leaf
        return best

    def _descendant_aliases(self, cid: str) -> list[int]:
        """Aliases of the codes in `cid`'s 3-character category (filtered to `cid`'s descendants by `_best`)."""
        if self._by_code is None:
            by: dict[str, list[int]] = {}
            for i, codes in enumerate(self.codes):
                for c in codes:
                    by.setdefault(_category(c), []).append(i)
            self._by_code = by
        return self._by_code.get(_category(cid), [])

    def _best(self, cand, words, alts, weights, total, mention_sides, leaves_only: bool = False,
              under: str = "") -> PhraseLink | None:
        best: tuple | None = None
        for i in cand:
            ss = self.alias_stems[i]
            if not ss:
                continue
            alias_sides = side_of(ss)
            if mention_sides and alias_sides and not (mention_sides & alias_sides):
                continue  # "left" mention, "right" alias
            matched, covered = 0.0, set()
            for w in words:
                hit = [a for a in alts[w] if a in ss]
                if hit:
                    matched += weights[w]
                    covered.update(hit)
            if matched == 0.0:
                continue
            cover = matched / total
            s_total = sum(self.weight(s) for s in ss)
            extra = sum(self.weight(s) for s in ss if s not in covered) / s_total
            score = cover - 0.25 * extra - OTHER_PENALTY * self.alias_other[i]
            for cid in self.codes[i]:
                if leaves_only and (self.is_group.get(cid, False) or not cid.replace(".", "").startswith(under)):
                    continue
                key = (round(score, 6), not self.is_group.get(cid, False), -len(cid))
                if best is None or key > best[0] or (key == best[0] and cid < best[1].code_id):
                    best = (key, PhraseLink(cid, score, cover, matched, self.aliases[i]))
        return best[1] if best else None

    # ---- laterality ----------------------------------------------------------------------------
    def children(self) -> dict[str, list[str]]:
        if self._children is None:
            out: dict[str, list[str]] = {}
            for cid in self.titles:
                system, code = cid.split(":", 1)
                bare = code.replace(".", "")
                if len(bare) > 3:
                    out.setdefault(bare[:-1], []).append(cid)
            self._children = out
        return self._children

    def lateral_code(self, cid: str, side: str) -> str:
        """The code that differs from `cid` in one character and names `side` ("left", "right",
        "bilateral") where `cid`'s title names no side ("... unspecified lower extremity" -> "... left lower
        extremity", S52.509A -> S52.501A); `cid` itself when there is none."""
        title = self.title_stems(cid)
        if side_of(title):
            return cid
        want = {"left": "left", "right": "right", "bilateral": "bilate"}[side]
        best, best_j = cid, 0.0
        for s in self.category_codes(cid):
            if len(s) != len(cid) or sum(x != y for x, y in zip(s, cid)) != 1:
                continue
            ts = self.title_stems(s)
            if want not in ts or (side_of(ts) - {side}):
                continue
            j = len((ts - {want}) & title) / max(len((ts - {want}) | title), 1)
            if j > best_j or (j == best_j and s < best):
                best, best_j = s, j
        return best if best_j >= 0.5 else cid

    def category_codes(self, cid: str) -> list[str]:
        if self._children is None:
            out: dict[str, list[str]] = {}
            for c in self.titles:
                out.setdefault(_category(c), []).append(c)
            self._children = {k: sorted(v) for k, v in out.items()}
        return self._children.get(_category(cid), [])

    def default_leaf(self, cid: str) -> str:
        """An assignable code for a grouping row: its descendant whose title adds the least to the group's
        title (the "unspecified" / "without ..." default: C53 -> C53.9, G43.1 -> G43.109, T78.2 -> T78.2XXA)."""
        if not self.is_group.get(cid, False):
            return cid
        bare = cid.replace(".", "")
        title = self.title_stems(cid)
        name = " ".join(_WORD.findall(self.titles.get(cid, "").lower()))
        nos = {i for i in self._descendant_aliases(cid)
               if " ".join(w for w in _WORD.findall(self.aliases[i]) if w != "nos") == name}
        nos_codes = {c for i in nos for c in self.codes[i]}
        best = None
        for c in self.category_codes(cid):
            if c == cid or self.is_group.get(c, False) or not c.replace(".", "").startswith(bare):
                continue
            t = self.titles.get(c, "").lower()
            extra = sum(self.weight(x) for x in self.title_stems(c) - title)
            extra += OTHER_PENALTY * 10 * bool(_OTHER.search(t))
            # ICD-10-CM's defaults: the code listing "<group title> NOS", then "uncomplicated" /
            # "without complications", then "unspecified", then the fewest added words
            key = (c not in nos_codes, not _UNCOMPLICATED.search(t), "unspecified" not in t, round(extra, 6), len(c), c)
            if best is None or key < best:
                best = key
        return best[-1] if best else cid


# ---- growing a mention over its phrase --------------------------------------------------------
def _is_content(tok, stop_words) -> bool:
    return tok.is_alpha and tok.lower_ not in stop_words and len(tok) >= 2


def phrase_spans(doc, start: int, end: int, stop_words) -> list[tuple[int, int]]:
    """Token spans (a, b) that grow the mention [start, end) leftwards and/or rightwards (not the mention itself)."""
    lefts = [start]
    i = start - 1
    while i >= 0 and start - i <= MAX_LEFT:
        t = doc[i]
        if (_is_content(t, stop_words) and t.lower_ not in LEFT_STOP) or t.lower_ in SIDES:
            lefts.append(i)
            i -= 1
        elif t.text == "-" and i > 0 and _is_content(doc[i - 1], stop_words):  # "post-traumatic"
            i -= 1
        else:
            break
    rights = [end]
    j, seen_connector = end, False
    while j < len(doc) and j - end < MAX_RIGHT:
        t = doc[j]
        low = t.lower_
        prev = doc[j - 1].lower_ if j > 0 else ""
        if low in RIGHT_CONNECTORS:
            seen_connector = True
        elif low in DETERMINERS or low in FILLER or low in ("-", "and"):
            pass
        elif low == ",":
            nxt = doc[j + 1].lower_ if j + 1 < len(doc) else ""
            if not (nxt in FILLER or nxt in RIGHT_CONNECTORS):
                break
        elif low in SIDES or (t.like_num and len(t) <= 2 and (j == end or prev in _NUMBERED)) or \
                (seen_connector and _is_content(t, stop_words)) or (j == end and is_seed(t)):
            # content words after a connector ("of the pancreas"), a disease word right after the
            # mention ("Clostridium difficile colitis"), side words, and "type 2" / "stage 3" numbers
            rights.append(j + 1)
        else:
            break
        j += 1
    out = []
    for a in lefts:
        for b in rights:
            if (a, b) != (start, end):
                out.append((a, b))
    return out


_NUMBERED = {"type", "stage", "grade", "class", "degree"}
# report verbs and nouns a mention is not grown over leftwards ("biopsy confirmed adenocarcinoma")
LEFT_STOP = frozenset("confirmed showed shows show revealed reveals found diagnosed noted excised removed treated "
                      "started had has known suspected developed consistent biopsy mass ct mri scan exam x-rays "
                      "ultrasound history patient man woman boy girl child infant".split())


# words that head a disease phrase although no alias matched them alone: histology, and disease suffixes
SEED_WORDS = frozenset("carcinoma adenocarcinoma cancer malignancy melanoma lymphoma sarcoma seminoma glioblastoma "
                       "glioma mesothelioma myeloma leukemia leukaemia neoplasm tumor tumour metastasis metastases "
                       "osteoarthritis arthritis arthrosis ulcer fracture sprain strain dislocation contusion "
                       "laceration hernia abscess cyst stone stones calculus infection tear rupture injury effusion "
                       "thrombosis clot occlusion stenosis".split())
_SEED_SUFFIX = re.compile(r"(itis|osis|oma|emia|aemia|pathy|plasia|ectasis|iasis)$")


SEED_EXCLUDE = frozenset("diagnosis prognosis hypnosis diploma aroma academia empathy sympathy telepathy stroma "
                         "apoptosis mitosis meiosis osmosis symbiosis phagocytosis endocytosis exocytosis "
                         "pinocytosis chemotaxis".split())


def is_seed(tok) -> bool:
    low = tok.lower_
    return tok.is_alpha and len(low) >= 5 and low not in SEED_EXCLUDE and (
        low in SEED_WORDS or bool(_SEED_SUFFIX.search(low)))


def seed_alone(index: "PhraseIndex", tok, min_score: float = 0.7) -> "PhraseLink | None":
    """A disease-suffix word no mention covers, linked alone when one alias accounts for it entirely
    ("hyponatremia" -> E87.1); histology and injury words (SEED_WORDS) never link alone ("adenocarcinoma"
    without its site would be C80.1)."""
    if tok.lower_ in SEED_WORDS:
        return None
    pl = index.link(_text(tok.doc[tok.i: tok.i + 1], index))
    ok = pl is not None and pl.cover >= 0.999 and pl.score >= min_score
    return pl if ok and _has_head(index, pl.alias, canonical_word(tok.lower_), ()) else None


def _text(span, index: "PhraseIndex | None" = None) -> str:
    """The span's words with spelling repairs (Token._.spelled, set by the pipeline), except for words
    the phrase index knows as they are ("seminoma" is not a misspelling of "semicoma")."""
    out = []
    for t in span:
        fixed = t._.spelled if t.has_extension("spelled") else None
        if fixed and index is not None and (stem(t.lower_) in index.postings or stem(t.lower_) in ALTERNATES):
            fixed = None
        out.append((fixed or t.text) + t.whitespace_)
    return "".join(out).strip()


def best_phrase(index: PhraseIndex, doc, start: int, end: int, stop_words, min_cover: float = 0.8
                ) -> tuple[int, int, PhraseLink] | None:
    """The grown span whose phrase link explains more of the text than the mention alone, or None.
    The grown phrase's alias must contain the mention's own most informative word (its "head")."""
    own_text = _text(doc[start:end], index)
    own = index.link(own_text)
    own_matched = own.matched if own is not None and own.cover >= min_cover else 0.0
    raw = [canonical_word(w) for w in _WORD.findall(own_text.lower()) if w not in NEUTRAL and stem(w) not in FILLER]
    if not raw:
        return None
    head_word = max(raw, key=lambda w: index.weight(stem(w)))
    head_alts = ALTERNATES.get(stem(head_word), ())
    best = None
    for a, b in phrase_spans(doc, start, end, stop_words):
        pl = index.link(_text(doc[a:b], index))
        if pl is None or pl.cover < min_cover or pl.matched <= own_matched + 1e-9:
            continue
        if not _has_head(index, pl.alias, head_word, head_alts):
            continue
        key = (pl.matched, pl.score, -(b - a))
        if best is None or key > best[0]:
            best = (key, (a, b, pl))
    return best[1] if best else None


def _has_head(index: "PhraseIndex", alias: str, word: str, alts) -> bool:
    """The alias holds the mention's head word itself (not only a word sharing its first letters:
    "vasculitis" is not "vascular") or one of its curated equivalents."""
    words = {canonical_word(w) for w in _WORD.findall(alias.lower())}
    if word in words or (word.endswith("s") and word[:-1] in words) or word + "s" in words:
        return True
    return any(a in index.alias_stems[index.alias_id[alias]] for a in alts)


def context_side(doc, start: int, end: int, stop_words) -> str | None:
    """The one side word of the mention or of the words it could grow over ("Frozen shoulder on the right")."""
    spans = phrase_spans(doc, start, end, stop_words)
    a = min([start] + [s for s, _ in spans])
    b = max([end] + [e for _, e in spans])
    return span_side(doc, a, b)


def span_side(doc, a: int, b: int) -> str | None:
    sides = {SIDES[stem(t.lower_)] for t in doc[a:b] if stem(t.lower_) in SIDES}
    return next(iter(sides)) if len(sides) == 1 else None
