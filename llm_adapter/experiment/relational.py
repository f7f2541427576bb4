"""The prefix experiment's relational task (issue 13): questions whose answer is something the
asked ICD-10-CM code is *connected to* (its GEM ICD-9-CM partner, its CCS group, its parent's
title, a sibling; `qa.datasets.relational.questions`), run through the same arms, budget rule, leak
check and resumable cells as the ontology task.

What changes against the ontology task:
  - questions: `build_relational_qa` of `RELATIONAL_DEFAULTS["types"]` (train questions of all
    types mixed; test questions scored and reported per type). The split is the ontology set's
    code hash (same fractions, same seed), by code *and* by answer group;
  - MedTok: trained on ICD-10-CM plus the systems the answers live in (ICD-9-CM, CCS, CCSR),
    so the GEM and grouping edges are inside its graph;
  - a third setting, "strict_edges": "strict" plus every edge the question types rely on
    removed from MedTok's graph where it touches a test-split code (`relied_edges`), so what
    a MedTok arm can still answer there cannot come through those edges.

The knowledge-graph types (`qa.datasets.relational.KG_TYPES`: which drug treats, which
symptom, anatomy, gene goes with the disease an ICD-10-CM code codes, from Hetionet joined
through MONDO) are their own task, "relational_kg": they need a KG-joined vocabulary
(`kg_vocabulary_dir`, built once from the shared `kg/` files like `scripts/build_vocab.py
--kg-mondo ... --kg-hetionet ...`) and a MedTok trained on it (ICD-10-CM, MONDO, Hetionet,
ATC: the systems their answers travel through).
"""

from __future__ import annotations

from pathlib import Path

from medbase.paths import cache_dir, shared_data_path
from medtok.build import build_vocabulary
from medtok.loading import load_vocabulary
from qa.datasets.relational.checks import relied_edges
from qa.datasets.relational.questions import KG_TYPES, RelationalQAConfig, build_relational_qa

RELATIONAL_TYPES = ("gem_icd9", "gem_icd9_distinct", "ccs", "parent_title", "sibling")
# test questions per type are cut first (the issue: cut relational counts before steps or
# the 300 test questions): 5 types x 150 = 750 test questions per cell
RELATIONAL_DEFAULTS = {"types": list(RELATIONAL_TYPES), "sizes": {"train": 1000, "validation": 0, "test": 150}}
RELATIONAL_MEDTOK_SYSTEMS = ("ICD10CM", "ICD9CM", "CCS", "CCSR")
# KG types: every test question they have (39 + 74 + 122 + 186 = 421 with the shared KG files)
RELATIONAL_KG_DEFAULTS = {"types": list(KG_TYPES), "sizes": {"train": 1000, "validation": 0, "test": 300}}
RELATIONAL_KG_MEDTOK_SYSTEMS = ("ICD10CM", "MONDO", "HETIONET", "ATC")
QUESTION_DEFAULTS = {"relational": RELATIONAL_DEFAULTS, "relational_kg": RELATIONAL_KG_DEFAULTS}


def kg_vocabulary_dir(kg_dir=None) -> Path:
    """The KG-joined vocabulary (default systems + MONDO + Hetionet from the shared `kg/` files),
    built on first use and cached like the default one (`build_vocabulary` reuses it by fingerprint)."""

    kg = Path(kg_dir) if kg_dir else shared_data_path("kg")
    if kg is None or not (Path(kg) / "mondo").is_dir() or not (Path(kg) / "hetionet").is_dir():
        raise FileNotFoundError(f"the relational_kg task needs MONDO and Hetionet files under {kg} "
                                "(the shared data's kg/; set MEDTOK_SHARED_DATA)")
    out = cache_dir() / "vocab_kg"
    build_vocabulary(out, kg_mondo=Path(kg) / "mondo", kg_hetionet=Path(kg) / "hetionet", progress=False)
    return out


def relational_config(overrides: dict, fcfg, task: str = "relational") -> RelationalQAConfig:
    """The cell's RelationalQAConfig: defaults + the experiment's overrides, with the split of
    the ontology set (so alignment captions, drawn from its training split, stay disjoint from
    every held-out question) and the cell's seed (question order, distractors)."""
    oc = fcfg.ontology
    d = {**QUESTION_DEFAULTS[task], **overrides, "seed": fcfg.seed,
         "split_fractions": list(oc.get("split_fractions", (0.7, 0.15, 0.15))), "split_seed": oc.get("split_seed", 0)}
    return RelationalQAConfig.from_dict(d)


def config_key(overrides: dict, task: str = "relational") -> dict:
    """What of the relational task enters a cell's config hash (the seed and split come from
    the fine-tuning config, which is hashed already)."""
    return {**QUESTION_DEFAULTS[task], **overrides}


def load_relational_questions(overrides: dict, fcfg, vocab=None, graph=None, task: str = "relational"):
    """(vocab, train questions, {"test": questions}) of a relational task for one cell."""
    if vocab is None or graph is None:

        vocab, graph = load_vocabulary(fcfg.vocab_dir)
    qs = build_relational_qa(vocab, graph, relational_config(overrides, fcfg, task))
    train = [q for q in qs if q.split == fcfg.train_split]
    evals = {s: [q for q in qs if q.split == s] for s in fcfg.eval_splits}
    if not train or not any(evals.values()):
        raise ValueError("the relational task produced no training or no evaluation questions")
    return vocab, train, evals


def edges_to_drop(types) -> list[list]:
    """[edge type, source system, target system] of every edge the question types rely on
    (a TrainConfig.drop_edge_types value), in a fixed order."""
    specs = {(e.type, e.src_system, e.dst_system) for t in types for e in relied_edges(t)}
    return [list(s) for s in sorted(specs, key=lambda s: tuple(x or "" for x in s))]


__all__ = ["RELATIONAL_TYPES", "RELATIONAL_DEFAULTS", "RELATIONAL_MEDTOK_SYSTEMS", "RELATIONAL_KG_DEFAULTS",
           "RELATIONAL_KG_MEDTOK_SYSTEMS", "QUESTION_DEFAULTS", "kg_vocabulary_dir", "relational_config", "config_key",
           "load_relational_questions", "edges_to_drop"]
