"""The prefix experiment's relational task (issue 13): questions whose answer is something the
asked ICD-10-CM code is *connected to* (its GEM ICD-9-CM partner, its CCS group, its parent's
title, a sibling; `qa.datasets.relational`), run through the same arms, budget rule, leak
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

`hetionet_treats` is left out of the defaults: it needs a KG-joined vocabulary
(`scripts/build_vocab.py --kg-mondo ... --kg-hetionet ...`) and has 38 test questions.
"""

from __future__ import annotations

from qa.datasets.relational import RelationalQAConfig, build_relational_qa
from qa.datasets.relational_checks import relied_edges

RELATIONAL_TYPES = ("gem_icd9", "gem_icd9_distinct", "ccs", "parent_title", "sibling")
# test questions per type are cut first (the issue: cut relational counts before steps or
# the 300 test questions): 5 types x 150 = 750 test questions per cell
RELATIONAL_DEFAULTS = {"types": list(RELATIONAL_TYPES), "sizes": {"train": 1000, "validation": 0, "test": 150}}
RELATIONAL_MEDTOK_SYSTEMS = ("ICD10CM", "ICD9CM", "CCS", "CCSR")


def relational_config(overrides: dict, fcfg) -> RelationalQAConfig:
    """The cell's RelationalQAConfig: defaults + the experiment's overrides, with the split of
    the ontology set (so alignment captions, drawn from its training split, stay disjoint from
    every held-out question) and the cell's seed (question order, distractors)."""
    oc = fcfg.ontology
    d = {**RELATIONAL_DEFAULTS, **overrides, "seed": fcfg.seed,
         "split_fractions": list(oc.get("split_fractions", (0.7, 0.15, 0.15))), "split_seed": oc.get("split_seed", 0)}
    return RelationalQAConfig.from_dict(d)


def config_key(overrides: dict) -> dict:
    """What of the relational task enters a cell's config hash (the seed and split come from
    the fine-tuning config, which is hashed already)."""
    return {**RELATIONAL_DEFAULTS, **overrides}


def load_relational_questions(overrides: dict, fcfg, vocab=None, graph=None):
    """(vocab, train questions, {"test": questions}) of the relational task for one cell."""
    if vocab is None or graph is None:
        from medtok.loading import load_vocabulary

        vocab, graph = load_vocabulary(fcfg.vocab_dir)
    qs = build_relational_qa(vocab, graph, relational_config(overrides, fcfg))
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


__all__ = ["RELATIONAL_TYPES", "RELATIONAL_DEFAULTS", "RELATIONAL_MEDTOK_SYSTEMS", "relational_config", "config_key",
           "load_relational_questions", "edges_to_drop"]
