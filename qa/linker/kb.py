"""A scispacy `KnowledgeBase` made from the project's `Vocabulary`.

One entity per code (concept_id = code_id such as "ICD10CM:E11.9"); its aliases are the
lowercased description, the source's synonyms (ICD-10-CM inclusion terms), curated
abbreviations and, optionally, shortened forms of those names. Every (alias, code) pair
remembers where it came from (`alias_rank`): when several codes share an alias, the code
for which it is the official name wins over one for which it is only a derived form.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable, Mapping

from scispacy.linking_utils import Entity, KnowledgeBase

from medtok.codes.vocabulary import UnknownCodeError, Vocabulary
from qa.linker.abbreviations import abbreviation_table, common_names
from qa.linker.config import LinkerConfig

# provenance of an alias, best first
RANK_NAME, RANK_SYNONYM, RANK_ABBREVIATION, RANK_EXTRA, RANK_DERIVED, RANK_GENERAL = 0, 1, 2, 3, 4, 5

# ICD qualifiers that carry no meaning for linking free text
_TRAILING = re.compile(
    r"(,?\s+(nos|unspecified|unspecified organism|unspecified site|site not specified|not elsewhere classified|"
    r"nec|uncomplicated|without complications?))+$"
)
_LEADING = re.compile(r"^(other specified|other|unspecified)\s+")
_BRACKETS = re.compile(r"\s*[\(\[][^\)\]]*[\)\]]")
_WORD = re.compile(r"[a-z]{4,}")
_CHAPTER = re.compile(r"^CH[0-9]+$")
_EMPTY_WORDS = {"other", "unspecified", "specified", "type", "site", "part", "with", "without", "disease",
                "diseases", "disorder", "disorders", "condition", "conditions", "status"}


def clean_alias(text: str) -> str:
    return " ".join(str(text).lower().split())


def derive_aliases(name: str, heads: bool = True) -> list[tuple[str, int]]:
    """Shorter ways free text names the same thing, with their rank.

    Dropping "unspecified"/"NOS"-type qualifiers or brackets keeps the meaning (RANK_DERIVED):
    "Essential (primary) hypertension" -> "essential hypertension". Dropping a leading "Other"
    or everything after the first comma generalises (RANK_GENERAL), so such a form loses ties:
    "Pneumonia, unspecified organism" -> "pneumonia" (RANK_DERIVED),
    "Migraine, unspecified, not intractable, without status migrainosus" -> "migraine" (RANK_GENERAL).
    `heads=False` skips the comma rule (inclusion terms are often inverted phrases).
    """
    base = clean_alias(name)
    out: dict[str, int] = {}

    def add(s: str, rank: int) -> None:
        s = s.strip(" ,;:-")
        if s and s != base and any(w not in _EMPTY_WORDS for w in _WORD.findall(s)) and rank < out.get(s, 99):
            out[s] = rank

    no_brackets = " ".join(_BRACKETS.sub("", base).split())
    for s in dict.fromkeys([base, no_brackets]):
        trimmed = _TRAILING.sub("", s)
        add(trimmed, RANK_DERIVED)
        general = _LEADING.sub("", trimmed)
        add(general, RANK_DERIVED if general == trimmed else RANK_GENERAL)
        head = _LEADING.sub("", general.split(",", 1)[0])
        # a one-word head ("Blood, injection, injury type phobia" -> "blood") is too vague
        if heads and "," in general and len(head.split()) >= 2:
            add(head, RANK_GENERAL)
    return sorted(out.items())


class CodeKnowledgeBase(KnowledgeBase):
    """scispacy KnowledgeBase over codes, plus the provenance rank of each (alias, code) pair."""

    def __init__(self, entities: Iterable[Entity], alias_rank: Mapping[tuple[str, str], int]):
        super().__init__(list(entities))
        self.alias_rank = dict(alias_rank)

    def rank(self, alias: str, concept_id: str) -> int:
        return self.alias_rank.get((alias, concept_id), RANK_GENERAL)

    def entity(self, concept_id: str) -> Entity:
        return self.cui_to_entity[concept_id]

    # ---- persistence (scispacy's own jsonl format + a side file for ranks) ----
    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / "kb.jsonl", "w") as f:
            for e in self.cui_to_entity.values():
                f.write(json.dumps(e._asdict()) + "\n")
        ranks = [[a, c, r] for (a, c), r in self.alias_rank.items() if r != RANK_GENERAL]
        (directory / "alias_ranks.json").write_text(json.dumps(ranks))

    @classmethod
    def load(cls, directory: str | Path) -> "CodeKnowledgeBase":
        directory = Path(directory)
        with open(directory / "kb.jsonl") as f:
            entities = [Entity(**json.loads(line)) for line in f]
        ranks = json.loads((directory / "alias_ranks.json").read_text())
        ranks = {(a, c): r for a, c, r in ranks}
        # pairs not stored are generalised derived aliases (the most numerous kind)
        full = {(a, e.concept_id): ranks.get((a, e.concept_id), RANK_GENERAL) for e in entities for a in e.aliases}
        return cls(entities, full)


def linkable_rows(vocab: Vocabulary, config: LinkerConfig):
    """Rows of the chosen systems that a mention may link to (no ranges, no chapters)."""
    df = vocab.codes
    df = df[df["system"].isin(config.systems)]
    if config.exclude_prefixes:
        df = df[~df["code_id"].str.startswith(config.exclude_prefixes)]
    if not config.include_groups:
        df = df[df["kind"] != "group"]
    # ranges ("E08-E13") and chapter nodes ("CH04") are navigation, not codes a text mentions
    ok = [("-" not in c) and not _CHAPTER.match(c) for c in df["code"]]
    return df[ok]


def _resolve(vocab: Vocabulary, code_id: str) -> str | None:
    """The code itself, else its nearest existing ancestor by truncation (vocabulary versions differ)."""
    system, code = code_id.split(":", 1)
    code = code.replace(".", "")
    while len(code) >= 3:
        try:
            return vocab.normalize(code, system)
        except UnknownCodeError:
            code = code[:-1]
    return None


def _extra_aliases(paths: Iterable[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise FileNotFoundError(f"extra alias file {p} does not exist (local paths only)")
        if path.suffix == ".jsonl":
            records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        else:
            records = json.loads(path.read_text())
        for r in records:
            e = Entity(**r)
            out.setdefault(e.concept_id, []).extend([e.canonical_name, *e.aliases])
    return out


def gem_titles(vocab: Vocabulary, graph) -> dict[str, list[str]]:
    """ICD-10-CM code_id -> titles of the ICD-9-CM codes that map forward onto it (GEM edges).

    The older classification often names the same condition differently ("Polycystic
    ovaries" for E28.2 "Polycystic ovarian syndrome"); only the forward map (ICD-9 -> ICD-10)
    is used, whose targets are the ICD-10 codes that carry the ICD-9 meaning."""
    if graph is None:
        return {}
    frame = graph.to_frame()
    frame = frame[frame["type"] == "gem_icd9_icd10"]
    ids = vocab.codes["code_id"].to_numpy()
    desc = vocab.codes["description"].to_numpy()
    out: dict[str, list[str]] = {}
    for s, d in zip(frame["src"].to_numpy(), frame["dst"].to_numpy()):
        out.setdefault(ids[d], []).append(desc[s])
    return {k: sorted(set(v)) for k, v in out.items()}


def build_knowledge_base(vocab: Vocabulary, config: LinkerConfig | None = None,
                         exclude: Mapping[str, Iterable[str]] | None = None, graph=None) -> CodeKnowledgeBase:
    """KB over the linkable codes of `vocab`.

    exclude: code_id -> synonyms to leave out (held-out evaluation); they are removed before
    aliases are derived, so no shortened form of a held-out synonym leaks into the KB either.
    graph:   the vocabulary's CodeGraph; with `config.gem_aliases` its ICD-9-CM -> ICD-10-CM GEM
             edges add the ICD-9-CM titles as aliases (the exclusions apply to them as well).
    """
    config = config or LinkerConfig()
    excluded = {cid: {clean_alias(s) for s in terms} for cid, terms in (exclude or {}).items()}
    rows = linkable_rows(vocab, config)
    extra = _extra_aliases(config.extra_alias_files)
    if config.gem_aliases:
        for cid, titles in gem_titles(vocab, graph).items():
            extra.setdefault(cid, []).extend(titles)
    aliases: dict[str, dict[str, int]] = {}  # code_id -> alias -> best rank

    def add(cid: str, alias: str, rank: int) -> None:
        alias = clean_alias(alias)
        if len(alias) < 2 or alias in excluded.get(cid, ()):
            return
        slot = aliases.setdefault(cid, {})
        if rank < slot.get(alias, 99):
            slot[alias] = rank
        if config.derived_aliases and rank < RANK_DERIVED:
            for d, r in derive_aliases(alias, heads=rank == RANK_NAME):
                if d not in excluded.get(cid, ()) and r < slot.get(d, 99):
                    slot[d] = r

    for cid, desc, syns in zip(rows["code_id"], rows["description"], rows["synonyms"]):
        add(cid, desc, RANK_NAME)
        for s in syns:
            add(cid, s, RANK_SYNONYM)
        for s in extra.get(cid, ()):
            add(cid, s, RANK_EXTRA)
    if config.abbreviations:
        linkable = set(rows["code_id"])
        for a in abbreviation_table(config.systems):
            cid = _resolve(vocab, a.code_id)
            if cid in linkable:
                add(cid, a.short, RANK_ABBREVIATION)
                add(cid, a.expansion, RANK_ABBREVIATION)
        for name, code_id in common_names(config.systems):
            cid = _resolve(vocab, code_id)
            if cid in linkable:
                add(cid, name, RANK_ABBREVIATION)

    desc_of = dict(zip(rows["code_id"], rows["description"]))
    kind_of = dict(zip(rows["code_id"], rows["kind"]))
    system_of = dict(zip(rows["code_id"], rows["system"]))
    entities = [Entity(concept_id=cid, canonical_name=desc_of[cid], aliases=sorted(al),
                       types=[system_of[cid], kind_of[cid]]) for cid, al in aliases.items()]
    ranks = {(a, cid): r for cid, al in aliases.items() for a, r in al.items()}
    return CodeKnowledgeBase(entities, ranks)


def abbreviation_aliases(kb: CodeKnowledgeBase) -> set[str]:
    """Aliases that are curated abbreviations (matched case-sensitively, never as lowercase words)."""
    shorts = {clean_alias(a.short) for a in abbreviation_table()}
    return {a for (a, _), r in kb.alias_rank.items() if r == RANK_ABBREVIATION and a in shorts}
