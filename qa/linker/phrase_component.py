"""The spaCy component after scispacy's EntityLinker: synonym-source links, whole-phrase mentions,
laterality and mention status (affirmed / negated / family / rule-out).

For each mention the linker found:
1. synonyms  a mention that is exactly an alias of a switched-on synonym source (MONDO, Hetionet,
             lay list; qa/linker/synonyms.py) and not a KB alias links to that source's code
2. phrases   (`phrase_mentions`) the mention grown over its site / laterality / "with" words
             (qa/linker/phrases.py) replaces it, and the mentions inside the grown span, when the
             grown phrase explains more of the text
3. laterality a side word in the mention picks the code's sibling for that side
4. status    `Span._.status` from NegEx-style cues (qa/linker/context.py)
"""

from __future__ import annotations

from spacy.tokens import Doc, Span

from qa.linker.context import AFFIRMED, mention_status
from qa.linker.phrases import PhraseIndex, best_phrase, context_side, is_seed, seed_alone
from qa.linker.synonyms import synonym_triples

LABEL_PHRASE, LABEL_SYNONYM = "PHRASE", "SYNONYM"

if not Span.has_extension("status"):
    Span.set_extension("status", default=AFFIRMED)


def synonym_table(config) -> dict[str, list[tuple[str, str]]]:
    """alias -> [(code_id, source)] of the synonym sources `config` switches on."""
    out: dict[str, list[tuple[str, str]]] = {}
    for alias, cid, src in synonym_triples(mondo=config.mondo_synonyms, hetionet=config.hetionet_synonyms,
                                           lay=config.lay_synonyms):
        out.setdefault(alias, []).append((cid, src))
    return out


def resolve_code(kb, code_id: str) -> str | None:
    """`code_id` if the KB links to it, else its nearest ancestor in the KB (ICD-10-CM by truncation)."""
    if code_id in kb.cui_to_entity:
        return code_id
    system, code = code_id.split(":", 1)
    bare = code.replace(".", "")
    while len(bare) > 3:
        bare = bare[:-1]
        cand = f"{system}:{bare[:3]}.{bare[3:]}" if len(bare) > 3 else f"{system}:{bare}"
        if cand in kb.cui_to_entity:
            return cand
    cand = f"{system}:{bare}"
    return cand if cand in kb.cui_to_entity else None


class PhraseMentions:
    def __init__(self, kb, config, stop_words):
        self.kb, self.config, self.stop_words = kb, config, stop_words
        self.synonyms: dict[str, str] = {}
        for alias, rows in synonym_table(config).items():
            for cid, _ in sorted(rows):
                resolved = resolve_code(kb, cid)
                if resolved is not None:
                    self.synonyms.setdefault(alias, resolved)
                    break
        self._index: PhraseIndex | None = None

    @property
    def index(self) -> PhraseIndex:
        if self._index is None:
            alias_codes = {a: set(c) for a, c in self.kb.alias_to_cuis.items()}
            for alias, cid in self.synonyms.items():
                alias_codes.setdefault(alias, set()).add(cid)
            ents = self.kb.cui_to_entity
            is_group = {cid: (e.types[1] if len(e.types) > 1 else "code") == "group" for cid, e in ents.items()}
            self._index = PhraseIndex(alias_codes, is_group, {cid: e.canonical_name for cid, e in ents.items()})
        return self._index

    def synonym_patterns(self) -> list[str]:
        """Synonym aliases the entity ruler should match (those that are no KB alias already)."""
        return sorted(a for a in self.synonyms if a not in self.kb.alias_to_cuis and len(a) >= 3
                      and a not in self.stop_words)

    def __call__(self, doc: Doc) -> Doc:
        cfg = self.config
        ents = list(doc.ents)
        links: dict[tuple[int, int], tuple[str, list]] = {(e.start, e.end): (e.label_, list(e._.kb_ents)) for e in ents}
        # 1. synonym sources
        for e in ents:
            text = " ".join(e.text.lower().split())
            if text in self.synonyms and text not in self.kb.alias_to_cuis:
                links[(e.start, e.end)] = (LABEL_SYNONYM, [(self.synonyms[text], 1.0)])
        # 2. whole phrases
        spans = sorted(links)
        if cfg.phrase_mentions:
            grown: list[tuple[int, int, str, list]] = []
            # seed words ("adenocarcinoma", "sprain"): alone they link nothing, grown they may; inside a
            # longer mention too ("confirmed adenocarcinoma" found by the fuzzy path)
            seeds = [(t.i, t.i + 1) for t in doc if is_seed(t) and (t.i, t.i + 1) not in links]
            inside = {i: (a, b) for a, b in spans for i in range(a, b)}
            for a, b in spans + seeds:
                got = best_phrase(self.index, doc, a, b, self.stop_words, cfg.phrase_min_cover)
                if got is not None:
                    ga, gb, pl = got
                    host = inside.get(a) if (a, b) not in links else None
                    if host is not None and host[0] <= ga and gb <= host[1]:
                        continue  # a seed's phrase must reach beyond the mention it sits in
                    grown.append((ga, gb, LABEL_PHRASE, [(pl.code_id, round(0.75 + 0.25 * max(0.0, pl.score), 4))]))
                elif (a, b) not in links and b == a + 1 and a not in inside:
                    pl = seed_alone(self.index, doc[a])
                    if pl is not None:
                        grown.append((a, b, LABEL_PHRASE, [(pl.code_id, round(0.75 + 0.25 * max(0.0, pl.score), 4))]))
            # longest grown span first; it removes the mentions it covers
            for ga, gb, label, kb_ents in sorted(grown, key=lambda g: (-(g[1] - g[0]), g[0])):
                if any(not (gb <= a or b <= ga) for (a, b), (lab, _) in links.items() if lab == LABEL_PHRASE):
                    continue
                for key in [k for k in links if not (gb <= k[0] or k[1] <= ga)]:
                    del links[key]
                links[(ga, gb)] = (label, kb_ents)
        # 3. laterality, 4. status
        new_ents = []
        keys = sorted(links)
        for a, b in keys:
            label, kb_ents = links[(a, b)]
            if cfg.assignable_codes and kb_ents:
                cid, score = kb_ents[0]
                kb_ents = [(self.index.default_leaf(cid), score)] + list(kb_ents[1:])
            if cfg.laterality and kb_ents:
                side = context_side(doc, a, b, self.stop_words)
                if side:
                    cid, score = kb_ents[0]
                    kb_ents = [(self.index.lateral_code(cid, side), score)] + list(kb_ents[1:])
            span = Span(doc, a, b, label=label)
            span._.kb_ents = kb_ents
            span._.status = mention_status(doc, a, b, keys) if cfg.mention_status else AFFIRMED
            new_ents.append(span)
        doc.ents = new_ents
        return doc
