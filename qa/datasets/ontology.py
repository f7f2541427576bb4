"""The ontology-derived QA set: "what does this code mean?", built from the vocabulary itself.

Each question shows a code id (never its text) and offers descriptions as options, so the
answer depends on knowing the code. Shipped by construction: no download, any size.

    What does the ICD-10-CM code ICD10CM:E11.9 denote?
    A: Type 2 diabetes mellitus without complications   <- answer
    B: ...                                              <- distractors

Distractors (`difficulty`):
  hard   codes under the nearest shared ancestor first: siblings (same parent), then
         cousins (same grandparent / category), and so on up the hierarchy
  easy   codes from other chapters (a different root ancestor)
  mixed  hard or easy per question (half each)

Splits are BY CODE: every candidate code belongs to exactly one of train / validation / test
by a hash of its code id (`split_seed`), and distractors come from the same split's codes,
so no test code appears anywhere in a training question (answer or distractor). The order
of codes within a split is also a hash (`seed`), so a larger set extends a smaller one, and
each question's options depend only on (`seed`, code), not on the set's size.

Two guards make "held out" strict (both size-independent, so sets stay nested):
- `text_guard`: a validation/test question is skipped when its answer text equals the
  description of a *training-split* code, since that text reaches training through the other
  code's question or alignment caption (e.g. test leaf F40.298 and its training-split parent
  F40.29 are both "Other specified phobia"). "systems" checks the codes of the question
  systems (what this set's training questions and captions show), "all" every system (needed
  when training also shows other systems' texts, e.g. the relational GEM questions), "off" none;
- `exclude_codes`: codes that must never appear in a train/validation question (asked or as a
  distractor), e.g. the test codes of another question set; in the test split they stay.
`split_code_ids` / `question_code_ids` list the held-out codes, so a MedTok can be trained
without them as centres ("strictly unseen").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medbase.hashing import split_of, stable_fraction
from medbase.jsonconfig import JsonConfig
from medbase.paths import default_vocab_dir
from medtok.codes.vocabulary import Vocabulary
from qa.datasets.common import filter_split
from qa.types import MCQuestion

log = logging.getLogger("qa.datasets")

SPLITS = ("train", "validation", "test")
DIFFICULTIES = ("hard", "easy", "mixed")
TEXT_GUARDS = ("systems", "all", "off")
SYSTEM_NAMES = {"ICD10CM": "ICD-10-CM", "ICD9CM": "ICD-9-CM", "ICD10PCS": "ICD-10-PCS",
                "ICD9PCS": "ICD-9-CM procedure", "ATC": "ATC", "CCS": "CCS", "CCSR": "CCSR"}
TEMPLATE = "What does the {system} code {code} denote?"
MAX_DEPTH = 12  # hierarchy levels walked (ICD-10-CM has 6 at most)


@dataclass
class OntologyQAConfig(JsonConfig):
    """sizes: questions per split (capped, with a warning, at the split's number of codes)."""

    systems: tuple[str, ...] = ("ICD10CM",)
    sizes: dict = field(default_factory=lambda: {"train": 2000, "validation": 300, "test": 300})
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    difficulty: str = "hard"
    n_options: int = 4
    leaf_only: bool = True          # only codes without children (assignable leaves)
    seed: int = 0                   # question order and distractors
    split_seed: int = 0             # which codes go to which split
    text_guard: str = "systems"     # "systems" / "all" / "off": see the module doc
    exclude_codes: tuple[str, ...] = ()  # never in a train/validation question (asked or distractor)

    def __post_init__(self):
        self.systems = tuple(self.systems)
        self.split_fractions = tuple(float(f) for f in self.split_fractions)
        self.exclude_codes = tuple(str(c) for c in self.exclude_codes)
        if self.text_guard not in TEXT_GUARDS:
            raise ValueError(f"text_guard must be one of {TEXT_GUARDS}, got {self.text_guard!r}")
        if not self.systems:
            raise ValueError("systems must name at least one code system")
        if self.difficulty not in DIFFICULTIES:
            raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {self.difficulty!r}")
        if not 2 <= self.n_options <= 10:
            raise ValueError(f"n_options must be 2..10, got {self.n_options}")
        if len(self.split_fractions) != 3 or min(self.split_fractions) < 0 or abs(sum(self.split_fractions) - 1) > 1e-6:
            raise ValueError(f"split_fractions must be 3 non-negative numbers summing to 1, got {self.split_fractions}")
        unknown = set(self.sizes) - set(SPLITS)
        if unknown:
            raise ValueError(f"sizes has unknown splits {sorted(unknown)}; use {SPLITS}")
        if any(int(n) < 0 for n in self.sizes.values()):
            raise ValueError(f"sizes must be non-negative, got {self.sizes}")


def code_split(code_id: str, split_fractions=(0.7, 0.15, 0.15), split_seed: int = 0) -> str:
    """The split a code belongs to (a pure function of the code id and `split_seed`). Every
    vocabulary code has one, so other question sets (qa.datasets.relational.questions) share it."""
    return split_of(code_id, dict(zip(SPLITS, split_fractions)), f"ontology-split-{split_seed}")


def norm_text(text) -> str:
    """The key under which two option/answer texts count as the same text."""
    return " ".join(str(text).split()).casefold()


def vocab_code_splits(vocab, split_fractions=(0.7, 0.15, 0.15), split_seed: int = 0) -> np.ndarray:
    """`code_split` of every vocabulary row (memoised for the last vocabulary object)."""
    key = ("splits", tuple(split_fractions), split_seed)
    memo = _memo(vocab)
    if key not in memo:
        memo[key] = np.array([code_split(c, split_fractions, split_seed) for c in vocab.codes["code_id"]])
        memo[key].setflags(write=False)
    return memo[key]


def training_texts(vocab, split_fractions=(0.7, 0.15, 0.15), split_seed: int = 0,
                   systems=None) -> frozenset[str]:
    """Normalised descriptions of every training-split code of the vocabulary (of `systems`;
    None = all): everything a training question, alignment caption or text-baseline caption
    built from training codes can show. A held-out answer outside this set cannot leak."""
    key = ("texts", tuple(split_fractions), split_seed, tuple(sorted(systems)) if systems else None)
    memo = _memo(vocab)
    if key not in memo:
        codes = vocab.codes
        keep = vocab_code_splits(vocab, split_fractions, split_seed) == "train"
        if systems:
            keep &= codes["system"].isin(list(systems)).to_numpy()
        memo[key] = frozenset(norm_text(d) for d in codes["description"].fillna("").to_numpy()[keep])
    return memo[key]


def _memo(vocab) -> dict:
    if _MEMO.get("vocab") is not vocab or _MEMO.get("rows") != len(vocab.codes):  # another (or a grown) vocabulary
        _MEMO.clear()
        _MEMO.update(vocab=vocab, rows=len(vocab.codes), sets={})
    return _MEMO["sets"]


_MEMO: dict = {}  # for the last vocabulary object only: hashing 200k code ids costs 1-2 s


class _Hierarchy:
    """First-parent ancestor chains and per-(split, ancestor) pools of candidate codes."""

    def __init__(self, vocab, cfg: OntologyQAConfig):
        codes = vocab.codes
        index = {cid: i for i, cid in enumerate(codes["code_id"])}
        parent = np.array([index.get(ps[0], -1) if len(ps) else -1 for ps in codes["parents"]], dtype=np.int64)
        in_sys = codes["system"].isin(cfg.systems).to_numpy()
        is_code = (codes["kind"] == "code").to_numpy()
        has_child = np.zeros(len(codes), dtype=bool)
        for ps in codes["parents"]:
            for p in ps:
                j = index.get(p)
                if j is not None:
                    has_child[j] = True
        mask = in_sys & is_code & (~has_child if cfg.leaf_only else True)
        self.rows = np.flatnonzero(mask)
        if len(self.rows) == 0:
            raise ValueError(f"no candidate codes in systems {cfg.systems} (leaf_only={cfg.leaf_only})")
        self.code_ids = codes["code_id"].to_numpy()[self.rows]
        self.systems = codes["system"].to_numpy()[self.rows]
        self.desc = codes["description"].astype(str).to_numpy()[self.rows]
        self.desc_key = np.array([d.strip().casefold() for d in self.desc])
        # ancestor chains, nearest first; the root (chapter) is the last entry
        self.chains: list[list[int]] = []
        for r in self.rows:
            chain, p = [], parent[r]
            while p >= 0 and len(chain) < MAX_DEPTH:
                chain.append(int(p))
                p = parent[p]
            self.chains.append(chain)
        self.root = np.array([c[-1] if c else -1 for c in self.chains], dtype=np.int64)
        self.split = vocab_code_splits(vocab, cfg.split_fractions, cfg.split_seed)[self.rows]  # a copy
        if cfg.exclude_codes:
            # excluded codes leave the train/validation pools (no question, no distractor)
            ex = np.isin(self.code_ids, list(cfg.exclude_codes)) & (self.split != "test")
            self.split[ex] = "excluded"
        guard = {"systems": cfg.systems, "all": None}
        self.train_texts = (training_texts(vocab, cfg.split_fractions, cfg.split_seed, guard[cfg.text_guard])
                            if cfg.text_guard != "off" else frozenset())
        pools: dict[tuple[str, int], list[int]] = {}
        for k, chain in enumerate(self.chains):
            for a in chain:
                pools.setdefault((self.split[k], a), []).append(k)
        self.pools = {key: np.array(v, dtype=np.int64) for key, v in pools.items()}
        self.by_split = {s: np.flatnonzero(self.split == s) for s in SPLITS}


def _draw(pool: np.ndarray, k: int, ok, rng: np.random.Generator) -> list[int]:
    """Up to k distinct members of `pool` accepted by `ok`, in random order."""
    out: list[int] = []
    if k <= 0 or len(pool) == 0:
        return out
    if len(pool) > 256:
        # big pools (a whole chapter or split): rejection sampling beats permuting everything
        for j in rng.integers(0, len(pool), size=40 * k):
            m = int(pool[j])
            if m not in out and ok(m):
                out.append(m)
                if len(out) == k:
                    return out
    for m in rng.permutation(pool):
        m = int(m)
        if m not in out and ok(m):
            out.append(m)
            if len(out) == k:
                break
    return out


def _question(h: _Hierarchy, k: int, cfg: OntologyQAConfig, split: str) -> MCQuestion | None:
    if split != "train" and norm_text(h.desc[k]) in h.train_texts:
        return None  # the answer text is also a training code's description
    rng = np.random.default_rng([cfg.seed, int(stable_fraction(h.code_ids[k], "ontology-q") * 2 ** 62)])
    mode = cfg.difficulty if cfg.difficulty != "mixed" else ("hard" if rng.random() < 0.5 else "easy")
    need = cfg.n_options - 1
    chosen: list[int] = []
    seen = {h.desc_key[k]}

    def ok(m: int) -> bool:
        # same system: a different system's spelling style would give the answer away
        return (h.desc_key[m] not in seen and h.systems[m] == h.systems[k]
                and (mode == "hard" or h.root[m] != h.root[k]))

    def take(pool):
        for m in _draw(pool, need - len(chosen), ok, rng):
            chosen.append(m)
            seen.add(h.desc_key[m])

    if mode == "hard":
        for a in h.chains[k]:  # nearest ancestor first
            take(h.pools.get((split, a), np.zeros(0, dtype=np.int64)))
            if len(chosen) == need:
                break
    if len(chosen) < need:
        take(h.by_split[split])
    if len(chosen) < need:
        return None
    answer = int(rng.integers(cfg.n_options))
    order = chosen[:answer] + [k] + chosen[answer:]
    cid = str(h.code_ids[k])
    system = str(h.systems[k])
    return MCQuestion(
        id=f"ontology-{cid}", question=TEMPLATE.format(system=SYSTEM_NAMES.get(system, system), code=cid),
        options=[str(h.desc[m]) for m in order], answer=answer, split=split, codes=[cid],
        meta={"difficulty": mode, "option_codes": [str(h.code_ids[m]) for m in order], "system": system},
    )


def build_ontology_qa(vocab=None, config: OntologyQAConfig | None = None, **overrides) -> list[MCQuestion]:
    """Questions for every split in `config.sizes` (train first). `vocab` defaults to the
    project's built vocabulary (`Vocabulary.load(default_vocab_dir())`)."""
    cfg = config or OntologyQAConfig(**overrides)
    if config is not None and overrides:
        cfg = OntologyQAConfig(**{**config.to_dict(), **overrides})
    if vocab is None:
        vocab = default_vocabulary()
    h = _Hierarchy(vocab, cfg)
    out: list[MCQuestion] = []
    for split in SPLITS:
        n = int(cfg.sizes.get(split, 0))
        if n == 0:
            continue
        members = h.by_split[split]
        # order within a split by a seeded hash: nested prefixes across sizes, independent of row order
        keys = np.array([stable_fraction(h.code_ids[k], f"ontology-order-{cfg.seed}") for k in members])
        made = 0
        for k in members[np.argsort(keys, kind="stable")]:
            q = _question(h, int(k), cfg, split)
            if q is not None:
                out.append(q)
                made += 1
                if made == n:
                    break
        if made < n:
            log.warning("ontology QA: only %d %s questions possible (asked %d) from %d %s codes",
                        made, split, n, len(members), "/".join(cfg.systems))
    return out


def split_code_ids(vocab, config: OntologyQAConfig | None = None, split: str = "test", **overrides) -> list[str]:
    """Every candidate code of `split` (the question systems' leaves), sorted: the codes to keep
    out of MedTok training for the strictly-unseen setting (a superset of any test set's codes)."""
    cfg = config or OntologyQAConfig(**overrides)
    h = _Hierarchy(vocab, cfg)
    return sorted(str(c) for c in h.code_ids[h.split == split])


def question_code_ids(questions, splits=("test",), options: bool = True) -> list[str]:
    """Codes the questions of `splits` are about (`q.codes`), plus their option codes
    (`meta["option_codes"]`) when `options`; sorted. Works for the ontology and relational sets."""
    out: set[str] = set()
    for q in questions:
        if q.split in splits:
            out.update(q.codes)
            if options:
                out.update(c for c in q.meta.get("option_codes", []) if c)
    return sorted(out)


def default_vocabulary():

    d = default_vocab_dir()
    if not (d / "codes.parquet").exists():
        raise FileNotFoundError(f"no vocabulary at {d}; build it first (see README) or pass vocab=")
    return Vocabulary.load(d)


def load_ontology(path: str | Path | None = None, *, split: str | None = None, vocab=None, **config) -> list[MCQuestion]:
    """Registry entry: `path` is a vocabulary directory (default: the project's built one)."""

    if vocab is None:
        vocab = Vocabulary.load(path) if path is not None else default_vocabulary()
    if split not in (None, "all") and "sizes" not in config and split in SPLITS:
        config["sizes"] = {split: OntologyQAConfig().sizes[split]}
    return filter_split(build_ontology_qa(vocab, OntologyQAConfig(**config)), split)
