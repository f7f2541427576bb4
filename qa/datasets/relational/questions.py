"""Relational questions: what an ICD-10-CM code is *connected to*, not what it says.

The ontology set (qa.datasets.ontology) asks for a code's own description, which MedTok's
text half encodes almost directly. These types ask for something the code graph or a
knowledge graph holds; each shows the code id only and offers 4 texts:

    gem_icd9           Which ICD-9-CM diagnosis is the GEM equivalent of the ICD-10-CM code X?
    gem_icd9_distinct  the same, only for GEM partners whose titles share few words with the
                       code's own description (`title_similarity` <= distinct_max_similarity)
    ccs                Which CCS category contains the ICD-10-CM code X?
    parent_title       What is the parent category of the ICD-10-CM code X?
    sibling            Which diagnosis shares a parent category with the ICD-10-CM code X?
    hetionet_treats    Which drug treats the disease coded by the ICD-10-CM code X?
    hetionet_symptom   Which symptom does the disease coded by the ICD-10-CM code X present?
    hetionet_anatomy   Which anatomical structure does the disease coded by ... X localize to?
    hetionet_gene      Which gene is associated with the disease coded by the ICD-10-CM code X?
                       (the KG types: Hetionet edges joined through MONDO; skipped when
                       ../shared/data/kg is absent; see qa.datasets.relational.kg)

Splits, by code AND by answer group. Every vocabulary code (question code, ICD-9 partner,
parent, CCS group, sibling) and every Hetionet answer node has one split, `ontology.code_split`
of its id, the same function as the ontology set, so both sets agree on which codes are held
out. A question is made only when the code and its answer share a split, and distractors come
from that split's answers: a test answer (a parent title, a CCS group shared by many codes)
is never an answer or option of a training question. Held-out answers whose text equals the
description of any training-split code (all systems), or a training KG node's name, are
skipped too (`ontology.training_texts`), so no training question or alignment caption built
from training codes shows a held-out answer.
Order within a split is a seeded hash of the code (the same for every type, so the types ask
about the same codes where they can): sizes nest, and `max_per_answer`
keeps one big group (e.g. ICD-9 V58.89 "Other specified aftercare") from filling a split.

`RELIED_EDGES[type]` names the graph edges a type's answer travels along; the helpers in
qa.datasets.relational.checks remove them from a CodeGraph (so MedTok can be retrained
without them) and check that no held-out code or answer text occurs in training questions or
captions (`training_footprint`, `find_leaks`).
"""

from __future__ import annotations

import logging
import re
from collections import Counter, namedtuple
from dataclasses import dataclass, field

import numpy as np

from medbase.hashing import stable_fraction
from medbase.jsonconfig import JsonConfig
from medbase.paths import shared_data_path
from medtok.loading import load_vocabulary
from qa.datasets.common import filter_split
from qa.datasets.ontology import SPLITS, _draw, code_split, norm_text, training_texts, vocab_code_splits
from qa.datasets.relational.kg import KG_RELATIONS, load_kg_facts
from qa.types import MCQuestion

log = logging.getLogger("qa.datasets")

SYSTEM = "ICD10CM"  # the question codes: ICD-10-CM leaves (the QA system of the fine-tuning job)
KG_TYPES = tuple(KG_RELATIONS)  # one per Hetionet metaedge
TYPES = ("gem_icd9", "gem_icd9_distinct", "ccs", "parent_title", "sibling") + KG_TYPES
_GEM_STEM = "Which ICD-9-CM diagnosis is the GEM equivalent of the ICD-10-CM code {code}?"
STEMS = {
    "gem_icd9": _GEM_STEM,
    "gem_icd9_distinct": _GEM_STEM,
    "ccs": "Which CCS category contains the ICD-10-CM code {code}?",
    "parent_title": "What is the parent category of the ICD-10-CM code {code}?",
    "sibling": "Which diagnosis shares a parent category with the ICD-10-CM code {code}?",
    "hetionet_treats": "Which drug treats the disease coded by the ICD-10-CM code {code}?",
    "hetionet_symptom": "Which symptom does the disease coded by the ICD-10-CM code {code} present?",
    "hetionet_anatomy": "Which anatomical structure does the disease coded by the ICD-10-CM code {code} localize to?",
    "hetionet_gene": "Which gene is associated with the disease coded by the ICD-10-CM code {code}?",
}

# (edge type, source system, target system); None matches any system
EdgeSpec = namedtuple("EdgeSpec", "type src_system dst_system")
_GEM = (EdgeSpec("gem_icd10_icd9", "ICD10CM", "ICD9CM"), EdgeSpec("gem_icd9_icd10", "ICD9CM", "ICD10CM"))
RELIED_EDGES: dict[str, tuple[EdgeSpec, ...]] = {  # removed by relational_checks.graph_without_relied_edges
    "gem_icd9": _GEM,
    "gem_icd9_distinct": _GEM,
    # CCSR nodes' descriptions name their dominant CCS category: a second path to the answer
    "ccs": (EdgeSpec("in_group", "ICD10CM", "CCS"), EdgeSpec("in_group", "ICD10CM", "CCSR")),
    "parent_title": (EdgeSpec("is_a", "ICD10CM", "ICD10CM"),),
    "sibling": (EdgeSpec("is_a", "ICD10CM", "ICD10CM"),),
    # code -> MONDO xref, then Hetionet relations (present only in a graph built with --kg-*)
    **{t: (EdgeSpec("xref", None, None), EdgeSpec("kg_relation", None, None)) for t in KG_TYPES},
}

_STOP = frozenset("a an and as at by for from in into of on or other the to unspecified specified with without "
                  "due nos nec not elsewhere classified".split())


def title_similarity(a: str, b: str) -> float:
    """Jaccard overlap of the two texts' content words (lower-cased, stop words dropped)."""
    wa = set(re.findall(r"[a-z0-9]+", str(a).lower())) - _STOP
    wb = set(re.findall(r"[a-z0-9]+", str(b).lower())) - _STOP
    return len(wa & wb) / len(wa | wb) if wa | wb else 1.0


@dataclass
class RelationalQAConfig(JsonConfig):
    """sizes: questions per split *per type* (fewer, with a warning, when the split has fewer)."""

    types: tuple[str, ...] = TYPES
    sizes: dict = field(default_factory=lambda: {"train": 1000, "validation": 150, "test": 300})
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)  # must match the ontology set's
    split_seed: int = 0
    seed: int = 0                      # question order, distractors, answer position
    n_options: int = 4
    difficulty: str = "hard"           # hard: distractors nearest the answer first; easy: other roots
    # questions per answer group per split (0 = no cap); few CCS groups hold many codes
    max_per_answer: dict = field(default_factory=lambda: {"default": 5, "ccs": 20})
    distinct_max_similarity: float = 0.2
    kg_dir: str | None = None          # None: the shared data's kg/ when present; "": no KG types
    kg_descendants: bool = True        # KG types also ask about leaves under a mapped code
    exclude_codes: tuple[str, ...] = ()  # never in a train/validation question (asked, answer or option)

    def __post_init__(self):
        self.types = tuple(self.types)
        self.split_fractions = tuple(float(f) for f in self.split_fractions)
        self.exclude_codes = tuple(str(c) for c in self.exclude_codes)
        unknown = set(self.types) - set(TYPES)
        if unknown or not self.types:
            raise ValueError(f"types must be a non-empty subset of {TYPES}, got {self.types}")
        if self.difficulty not in ("hard", "easy"):
            raise ValueError(f"difficulty must be 'hard' or 'easy', got {self.difficulty!r}")
        if not 2 <= self.n_options <= 10:
            raise ValueError(f"n_options must be 2..10, got {self.n_options}")
        if len(self.split_fractions) != 3 or min(self.split_fractions) < 0 or abs(sum(self.split_fractions) - 1) > 1e-6:
            raise ValueError(f"split_fractions must be 3 non-negative numbers summing to 1, got {self.split_fractions}")
        if set(self.sizes) - set(SPLITS) or any(int(n) < 0 for n in self.sizes.values()):
            raise ValueError(f"sizes must map {SPLITS} to non-negative counts, got {self.sizes}")
        if isinstance(self.max_per_answer, int):
            self.max_per_answer = {"default": self.max_per_answer}
        self.max_per_answer = {"default": 5, **self.max_per_answer}
        if set(self.max_per_answer) - {"default", *TYPES} or min(self.max_per_answer.values()) < 0:
            raise ValueError(f"max_per_answer: counts >= 0 keyed by 'default' or a type, got {self.max_per_answer}")
        if not 0 <= self.distinct_max_similarity <= 1:
            raise ValueError("distinct_max_similarity must be in [0, 1]")


class _Space:
    """The possible answers of one type: key (code id), text, split, ancestor chain (nearest
    first, for hard distractors) and per-(split, ancestor) pools."""

    def __init__(self, keys, texts, splits, chains):
        self.keys = [str(k) for k in keys]
        self.texts = [str(t) for t in texts]
        self.norm = [norm_text(t) for t in self.texts]
        self.split = np.asarray(splits)
        self.chains = chains
        self.pos = {k: i for i, k in enumerate(self.keys)}
        self.root = [c[-1] if c else None for c in chains]
        pools: dict = {}
        for i, chain in enumerate(chains):
            for a in chain:
                pools.setdefault((self.split[i], a), []).append(i)
        self.pools = {k: np.array(v, dtype=np.int64) for k, v in pools.items()}
        self.by_split = {s: np.flatnonzero(self.split == s) for s in SPLITS}


class _Context:
    """Vocabulary arrays, first-parent chains, splits and relation tables, built once."""

    def __init__(self, vocab, graph, cfg: RelationalQAConfig):
        codes = vocab.codes
        self.cfg = cfg
        self.ids = codes["code_id"].to_numpy().astype(str)
        self.system = codes["system"].to_numpy().astype(str)
        self.desc = codes["description"].fillna("").astype(str).to_numpy()
        self.index = {c: i for i, c in enumerate(self.ids)}
        self.parent = np.array([self.index.get(ps[0], -1) if len(ps) else -1 for ps in codes["parents"]], dtype=np.int64)
        has_child = np.zeros(len(self.ids), dtype=bool)
        has_child[self.parent[self.parent >= 0]] = True
        self.leaves = np.flatnonzero((self.system == SYSTEM) & (codes["kind"].to_numpy() == "code") & ~has_child)
        self.split = vocab_code_splits(vocab, cfg.split_fractions, cfg.split_seed)
        self.excluded = set(cfg.exclude_codes)
        self.train_texts = training_texts(vocab, cfg.split_fractions, cfg.split_seed, None)
        self._chains: dict[int, list[int]] = {}
        self._frac: dict[str, float] = {}
        f = graph.to_frame()
        f["s_sys"], f["d_sys"] = self.system[f["src"].to_numpy()], self.system[f["dst"].to_numpy()]
        self.edges = f

    def chain(self, r: int) -> list[int]:
        """First-parent ancestors of row r, nearest first."""
        if r not in self._chains:
            out, p = [], self.parent[r]
            while p >= 0 and len(out) < 12:
                out.append(int(p))
                p = self.parent[p]
            self._chains[r] = out
        return self._chains[r]

    def pairs(self, etype: str, src_sys: str, dst_sys: str) -> list[tuple[int, int]]:
        e = self.edges
        m = (e["type"] == etype) & (e["s_sys"] == src_sys) & (e["d_sys"] == dst_sys)
        return list(zip(e.loc[m, "src"].astype(int), e.loc[m, "dst"].astype(int)))

    def space(self, rows) -> _Space:
        """The answers that are these vocabulary rows; `space.row_pos` maps a row to its answer index."""
        rows = [int(r) for r in rows]
        sp = _Space(self.ids[rows], self.desc[rows], self.split[rows], [self.chain(r) for r in rows])
        sp.row_pos = {r: i for i, r in enumerate(rows)}
        return sp

    def frac(self, key: str) -> float:
        """A seeded hash of `key` in [0, 1), memoised: it orders codes and answers."""
        if key not in self._frac:
            self._frac[key] = stable_fraction(key, f"relational-{self.cfg.seed}")
        return self._frac[key]

    def preferred(self, x: int, space: "_Space", answers) -> list[int]:
        """`answers` in this question's order of preference: the answers' hash order, rotated by
        the code's own hash (so codes sharing answers do not all prefer the same one)."""
        fx = self.frac(self.ids[x])
        return sorted(answers, key=lambda a: (self.frac(space.keys[a]) - fx) % 1.0)


@dataclass
class _Type:
    """One question type: its answers, and per question code the true answers and the answers
    that must not be distractors."""

    name: str
    space: _Space
    targets: dict[int, list[int]]    # question row -> answer indices (`_Context.preferred` orders them)
    forbidden: dict[int, set[int]]   # question row -> never a distractor
    hops: dict = field(default_factory=dict)  # KG types: (row, answer) -> edges from the code to the answer


def _gem_partners(ctx: _Context) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    for a, b in ctx.pairs("gem_icd10_icd9", "ICD10CM", "ICD9CM"):
        out.setdefault(a, set()).add(b)
    for b, a in ctx.pairs("gem_icd9_icd10", "ICD9CM", "ICD10CM"):
        out.setdefault(a, set()).add(b)
    return out


def _by_relation(ctx, qtype, rel: dict[int, set[int]], keep=lambda x, y: True) -> _Type:
    """A type whose answers are vocabulary rows related to the question row by `rel`."""
    rows = sorted({y for ys in rel.values() for y in ys})
    space = ctx.space(rows)
    targets, forbidden = {}, {}
    for x, ys in rel.items():
        idx = [space.row_pos[y] for y in ys]
        ok = [space.row_pos[y] for y in ys if keep(x, y)]
        if ok:
            targets[x], forbidden[x] = ok, set(idx)
    return _Type(qtype, space, targets, forbidden)


def _build_type(ctx: _Context, qtype: str, kg) -> _Type | None:
    leaves = set(ctx.leaves.tolist())
    if qtype in ("gem_icd9", "gem_icd9_distinct"):
        rel = {x: ys for x, ys in _gem_partners(ctx).items() if x in leaves}
        if qtype == "gem_icd9":
            return _by_relation(ctx, qtype, rel)
        thr = ctx.cfg.distinct_max_similarity
        return _by_relation(ctx, qtype, rel, keep=lambda x, y: title_similarity(ctx.desc[x], ctx.desc[y]) <= thr)
    if qtype == "ccs":
        rel: dict[int, set[int]] = {}
        for x, y in ctx.pairs("in_group", "ICD10CM", "CCS"):
            if x in leaves:
                rel.setdefault(x, set()).add(y)
        return _by_relation(ctx, qtype, rel)
    if qtype == "parent_title":
        rel = {x: {int(ctx.parent[x])} for x in leaves if ctx.parent[x] >= 0}
        t = _by_relation(ctx, qtype, rel)
        for x in t.targets:  # no ancestor of the code may be a distractor ("category" is ambiguous)
            t.forbidden[x] |= {t.space.row_pos[a] for a in ctx.chain(x) if a in t.space.row_pos}
        return t
    if qtype == "sibling":
        kids: dict[int, list[int]] = {}
        for x in sorted(leaves):
            if ctx.parent[x] >= 0:
                kids.setdefault(int(ctx.parent[x]), []).append(x)
        space = ctx.space(sorted(leaves))
        targets, forbidden = {}, {}
        for group in kids.values():
            if len(group) < 2:
                continue
            idx = {space.row_pos[x] for x in group}
            for x in group:
                targets[x], forbidden[x] = sorted(idx - {space.row_pos[x]}), idx
        return _Type(qtype, space, targets, forbidden)
    if qtype in KG_TYPES:
        return _kg_type(ctx, kg, qtype) if kg else None
    raise ValueError(qtype)


def _kg_type(ctx: _Context, kg, qtype: str) -> _Type | None:
    """Answers: the Hetionet nodes at the other end of the type's metaedge (keyed `HETIO:<id>`,
    as the KG-joined vocabulary keys them, so both agree on their split). A code mapped to a
    disease gets the disease's answers; with `kg_descendants`, every leaf under it too, and
    `hops` records how far the answer is in the KG-joined graph: the is_a steps up to the
    mapped code, then code -> MONDO (xref) -> answer (kg_relation)."""
    me = KG_RELATIONS[qtype].metaedge
    ids = sorted(kg.pools.get(me, ()))
    keys = [f"HETIO:{n}" for n in ids]
    splits = [code_split(k, ctx.cfg.split_fractions, ctx.cfg.split_seed) for k in keys]
    space = _Space(keys, [kg.names[n] for n in ids], splits, [[] for _ in keys])
    mapped: dict[int, set[int]] = {}  # vocabulary row -> answers of a disease mapped to it
    for disease, others in kg.relations.get(me, {}).items():
        for c in kg.disease_codes[disease]:
            if c in ctx.index:
                mapped.setdefault(ctx.index[c], set()).update(space.pos[f"HETIO:{o}"] for o in others)
    hops: dict = {}
    rows = set(mapped) | (set(ctx.leaves.tolist()) if ctx.cfg.kg_descendants else set())
    for x in rows:
        for depth, a in enumerate([x] + (ctx.chain(x) if ctx.cfg.kg_descendants else [])):
            for ans in mapped.get(a, ()):
                hops.setdefault((x, ans), depth + 2)  # nearest mapped ancestor first
    targets: dict[int, list[int]] = {}
    for x, ans in hops:
        targets.setdefault(x, []).append(ans)
    forbidden = {x: set(ans) for x, ans in targets.items()}
    return _Type(qtype, space, {x: sorted(a) for x, a in targets.items()}, forbidden, hops) if targets else None


def _question(ctx: _Context, t: _Type, x: int, split: str, used: Counter) -> MCQuestion | str:
    """The question about row x, or the reason there is none."""
    cfg, sp = ctx.cfg, t.space
    blocked = ctx.excluded if split != "test" else set()  # excluded codes stay usable in test
    cap = cfg.max_per_answer.get(t.name, cfg.max_per_answer["default"])
    answers = ctx.preferred(x, sp, [a for a in t.targets[x] if sp.split[a] == split])
    # why a code yields no question, in order (counted in `stats`)
    for reason, keep in (("answer_in_other_split", None),
                         ("excluded", lambda a: sp.keys[a] not in blocked),
                         ("text_guard", lambda a: split == "train" or sp.norm[a] not in ctx.train_texts),
                         ("answer_cap", lambda a: not cap or used[sp.keys[a]] < cap)):
        answers = [a for a in answers if keep is None or keep(a)]
        if not answers:
            return reason
    a = answers[0]
    cid = str(ctx.ids[x])
    rng = np.random.default_rng([cfg.seed, int(stable_fraction(f"{t.name}:{cid}", "relational-q") * 2 ** 62)])
    need, chosen = cfg.n_options - 1, []
    seen = {sp.norm[i] for i in t.forbidden[x]} | {sp.norm[a]}  # no option may read like a right answer

    def ok(m: int) -> bool:
        return (m not in t.forbidden[x] and sp.norm[m] not in seen and sp.keys[m] not in blocked
                and (cfg.difficulty == "hard" or sp.root[a] is None or sp.root[m] != sp.root[a]))

    def take(pool):
        for m in _draw(pool, need - len(chosen), ok, rng):
            chosen.append(m)
            seen.add(sp.norm[m])

    if cfg.difficulty == "hard":
        for anc in sp.chains[a]:
            take(sp.pools.get((split, anc), np.zeros(0, dtype=np.int64)))
            if len(chosen) == need:
                break
    if len(chosen) < need:
        take(sp.by_split[split])
    if len(chosen) < need:
        return "distractors"
    used[sp.keys[a]] += 1
    pos = int(rng.integers(cfg.n_options))
    order = chosen[:pos] + [a] + chosen[pos:]
    return MCQuestion(
        id=f"relational-{t.name}-{cid}", question=STEMS[t.name].format(code=cid),
        options=[sp.texts[m] for m in order], answer=pos, split=split, codes=[cid],
        meta={"qtype": t.name, "answer_group": sp.keys[a], "option_codes": [sp.keys[m] for m in order],
              "edge_types": sorted({e.type for e in RELIED_EDGES[t.name]}), "system": SYSTEM,
              "difficulty": cfg.difficulty, "similarity": round(title_similarity(ctx.desc[x], sp.texts[a]), 4),
              **({"answer_hops": t.hops[(x, a)]} if t.hops else {})},
    )


def build_relational_qa(vocab=None, graph=None, config: RelationalQAConfig | None = None, stats: dict | None = None,
                        **overrides) -> list[MCQuestion]:
    """Questions of every type in `config.types`, each type's train, validation, test in turn.
    `vocab`/`graph` default to the built cache (`medtok.loading.load_vocabulary`). `stats`, if
    given, receives per (type, split) the candidate codes, questions made and why codes were
    skipped before the size was reached."""
    cfg = config or RelationalQAConfig(**overrides)
    if config is not None and overrides:
        cfg = RelationalQAConfig.from_dict({**config.to_dict(), **overrides})
    if vocab is None or graph is None:

        vocab, graph = load_vocabulary()
    ctx = _Context(vocab, graph, cfg)
    kg = None
    if any(t in KG_TYPES for t in cfg.types):
        kg = load_kg_facts(_kg_dir(cfg))
        # training KG nodes' names are training texts too (they are no vocabulary code's description)
        ctx.train_texts = ctx.train_texts | {norm_text(name) for n, name in kg.names.items()
                                             if code_split(f"HETIO:{n}", cfg.split_fractions, cfg.split_seed) == "train"}
    out: list[MCQuestion] = []
    for qtype in cfg.types:
        t = _build_type(ctx, qtype, kg)
        if t is None:
            log.warning("relational QA: type %s skipped (no knowledge-graph facts join the vocabulary)", qtype)
            continue
        for split in SPLITS:
            n = int(cfg.sizes.get(split, 0))
            if n == 0:
                continue
            xs = [x for x in t.targets if ctx.split[x] == split and (split == "test" or ctx.ids[x] not in ctx.excluded)]
            xs.sort(key=lambda x: ctx.frac(ctx.ids[x]))  # one order for every type: they ask about the same codes
            used: Counter = Counter()
            made, why = 0, Counter()
            for x in xs:
                q = _question(ctx, t, x, split, used)
                if isinstance(q, str):
                    why[q] += 1
                    continue
                out.append(q)
                made += 1
                if made == n:
                    break
            if stats is not None:
                stats[(qtype, split)] = {"codes": len(xs), "made": made, **why}
            if made < n:
                log.warning("relational QA: only %d %s questions of type %s (asked %d)", made, split, qtype, n)
    return out


def _kg_dir(cfg: RelationalQAConfig):
    if cfg.kg_dir is not None:
        return cfg.kg_dir or None

    return shared_data_path("kg")


def load_relational(path=None, *, split: str | None = None, vocab=None, graph=None, **config) -> list[MCQuestion]:
    """Registry-style entry (`load_dataset` signature): `path` is a vocabulary directory
    (default: the built cache); `split` filters; other keywords are RelationalQAConfig fields."""

    if vocab is None or graph is None:

        vocab, graph = load_vocabulary(path)
    return filter_split(build_relational_qa(vocab, graph, RelationalQAConfig(**config)), split)
