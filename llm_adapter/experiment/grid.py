"""The prefix experiment (issue 13): arm x setting x seed, one resumable cell at a time.

    run_experiment(ExperimentConfig())      # what `scripts/prefix_experiment.py` runs
    summarize(ExperimentConfig())           # one markdown table from the finished cells

Budget rule (one rule, every arm): each arm gets the same number of optimizer steps x
examples in total, B = align.steps x align batch + qa.steps x qa batch (default 120 x 16 +
60 x 16 = 2,880 examples in 180 steps).
  - prefix arms (every vector source): align stage (projector only, captions) + QA stage;
  - text baseline: the align stage's counterpart, LoRA on the same codes' captions written as
    text (`llm_adapter.text_baseline`), + the same QA stage;
  - no prefix: the alignment budget goes to extra QA steps (`no_prefix_budget="qa"`: 180 QA
    steps of 16).
The budget each arm really got is read off its recorded training curves (steps, examples,
tokens, soft prefix positions) and written into its cell record.

Settings: "today" (test codes held out of the LM stage only; MedTok trained on every
ICD-10-CM code but its hashed 5%), "strict" (also never MedTok training centres:
`TrainConfig.heldout_codes` = every vocabulary code of the test split). Only the MedTok arms
differ between settings; the other arms' cells are shared ("shared" in the cell name) and
reported under both.

Tasks: "ontology" (the job's code -> description questions; results/prefix_experiment) and
"relational" (`llm_adapter.experiment.relational`: GEM partner, CCS group, parent title,
sibling; per-type accuracy; MedTok also on ICD-9-CM/CCS/CCSR; a third setting
"strict_edges" = strict + the edges those answers travel along removed around test codes;
results/prefix_experiment_relational) and "relational_kg" (the knowledge-graph types: which
drug, symptom, anatomy, gene goes with the coded disease, on a KG-joined vocabulary; MedTok on
ICD-10-CM, MONDO, Hetionet, ATC; results/prefix_experiment_relational_kg).

A seed fixes the question sampling (`OntologyQAConfig.seed`; the test *codes* stay the held-out
split), the initialisation, the data order and the seed of each MedTok that arm reads. MedToks
are trained as a visible stage of their own, cached by config hash (`medtok_dir`).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from llm_adapter.data import alignment_codes, load_questions
from llm_adapter.experiment.medtok_stage import medtok_stage
from llm_adapter.experiment.relational import (RELATIONAL_KG_MEDTOK_SYSTEMS, RELATIONAL_MEDTOK_SYSTEMS, config_key,
                                               kg_vocabulary_dir, load_relational_questions)
from llm_adapter.finetune import finetune
from llm_adapter.finetune_config import TEXT_ARM, FinetuneConfig
from llm_adapter.model import load_base_lm
from medbase.atomic import atomic_write_text
from medbase.jsonconfig import JsonConfig
from medbase.paths import cache_dir
from qa.datasets.relational.checks import find_leaks, training_footprint
from qa.metrics import accuracy_with_ci

# arm -> (FinetuneConfig arm kind, vector source, MedTok modalities or None)
ARM_SPECS = {
    "no_prefix": ("lora", None, None),
    "text_baseline": (TEXT_ARM, None, None),
    "prefix_medtok": ("lora+prefix", "medtok", "both"),
    "prefix_minilm": ("lora+prefix", "minilm", None),
    "prefix_constant": ("lora+prefix", "constant", None),
    "prefix_random": ("lora+prefix", "random", None),
    "prefix_medtok_text": ("lora+prefix", "medtok", "text"),
    "prefix_medtok_graph": ("lora+prefix", "medtok", "graph"),
}
ARMS = tuple(ARM_SPECS)  # also the run order within a seed: the most informative first
SETTINGS = ("today", "strict", "strict_edges")
TASKS = ("ontology", "relational", "relational_kg")
DEFAULTS = {  # per task: settings, MedTok systems, where results and checkpoints go
    "ontology": {"settings": ("today", "strict"), "medtok_systems": ("ICD10CM",),
                 "results_dir": "results/prefix_experiment", "work_dir": "runs/prefix_experiment"},
    # relational: strict_edges is strict plus the relied edges removed, so it is the setting
    # that answers "does the graph carry the answer"; plain strict (measured on the ontology
    # task, within seed noise of today) stays runnable with --settings but is off the grid.
    "relational": {"settings": ("today", "strict_edges"), "medtok_systems": RELATIONAL_MEDTOK_SYSTEMS,
                   "results_dir": "results/prefix_experiment_relational", "work_dir": "runs/prefix_experiment_relational"},
    # the knowledge-graph types, on a KG-joined vocabulary (`kg_vocabulary_dir`)
    "relational_kg": {"settings": ("today", "strict_edges"), "medtok_systems": RELATIONAL_KG_MEDTOK_SYSTEMS,
                      "results_dir": "results/prefix_experiment_relational_kg",
                      "work_dir": "runs/prefix_experiment_relational_kg"},
}
MINIMUM = {"align_examples": 120 * 16, "qa_examples": 60 * 16, "test_questions": 300}


@dataclass
class ExperimentConfig(JsonConfig):
    task: str = "ontology"                          # "ontology" | "relational" | "relational_kg"
    relational: dict = field(default_factory=dict)  # RelationalQAConfig overrides (relational tasks)
    results_dir: str | None = None                  # one small JSON per finished cell (committed); None: per task
    work_dir: str | None = None                     # per-cell checkpoints (resume after a kill); None: per task
    medtok_dir: str | None = None                   # None: <cache>/prefix_experiment_medtok
    arms: tuple = ARMS
    settings: tuple | None = None                   # None: the task's (DEFAULTS)
    seeds: tuple = (0, 1, 2)
    finetune: dict = field(default_factory=dict)    # FinetuneConfig overrides (default: the job's recipe)
    no_prefix_budget: str = "qa"                    # "qa": alignment budget spent on extra QA steps
    medtok_steps: int = 600
    medtok_batch_size: int = 256
    medtok_model: dict = field(default_factory=dict)  # MedTokConfig overrides
    medtok_systems: tuple | None = None             # None: the task's (DEFAULTS)
    checkpoint_every: int = 20
    threads: int | None = 1
    enforce_minimum: bool = True                    # never below today's steps / 300 test questions
    progress: bool = False

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        for key, val in DEFAULTS[self.task].items():
            if getattr(self, key) is None:
                setattr(self, key, val)
        if self.task == "ontology" and ("strict_edges" in self.settings or self.relational):
            raise ValueError("the strict_edges setting and relational overrides belong to task='relational'")
        self.arms, self.settings = tuple(self.arms), tuple(self.settings)
        self.seeds, self.medtok_systems = tuple(int(s) for s in self.seeds), tuple(self.medtok_systems)
        bad = [a for a in self.arms if a not in ARM_SPECS] + [s for s in self.settings if s not in SETTINGS]
        if bad or not self.arms or not self.settings or not self.seeds:
            raise ValueError(f"unknown or empty arms/settings/seeds: {bad}; arms {ARMS}, settings {SETTINGS}")
        if self.no_prefix_budget not in ("qa", "none"):
            raise ValueError("no_prefix_budget must be 'qa' (equal budget) or 'none' (QA stage only)")
        base = self.base_config()
        if self.no_prefix_budget == "qa" and self.align_examples(base) % self.step_examples(base.qa):
            raise ValueError("the alignment budget must be a whole number of QA steps (align examples % QA batch)")
        if self.enforce_minimum:
            test = base.ontology.get("sizes", {}).get("test", 0)
            if (self.align_examples(base) < MINIMUM["align_examples"]
                    or base.qa.steps * self.step_examples(base.qa) < MINIMUM["qa_examples"] or test < MINIMUM["test_questions"]):
                raise ValueError(f"below today's budget {MINIMUM} (enforce_minimum=False only for tests)")

    # ---- budget -----------------------------------------------------------------------------
    @staticmethod
    def step_examples(stage) -> int:
        return stage.batch_size * stage.grad_accum

    def align_examples(self, base: FinetuneConfig) -> int:
        return base.align.steps * self.step_examples(base.align)

    def base_config(self) -> FinetuneConfig:
        d = {**FinetuneConfig().to_dict(), **self.finetune}
        return FinetuneConfig.from_dict(d)

    def budget_examples(self) -> int:
        b = self.base_config()
        return self.align_examples(b) + b.qa.steps * self.step_examples(b.qa)

    def medtok_root(self) -> Path:
        return Path(self.medtok_dir) if self.medtok_dir else cache_dir() / "prefix_experiment_medtok"


def shared_across_settings(arm: str) -> bool:
    """Arms whose inputs do not depend on the setting (no MedTok): one cell serves both."""
    return ARM_SPECS[arm][1] != "medtok"


def cell_name(arm: str, setting: str, seed: int) -> str:
    return f"{arm}__{'shared' if shared_across_settings(arm) else setting}__seed{seed}"


def cells(cfg: ExperimentConfig) -> list[tuple[str, str, int]]:
    """(arm, setting, seed) in run order: seed by seed; within a seed every arm in today's
    setting (config order), then the strict setting's MedTok arms. Shared cells appear once."""
    out, seen = [], set()
    for seed in cfg.seeds:
        for setting in cfg.settings:
            for arm in cfg.arms:
                name = cell_name(arm, setting, seed)
                if name not in seen:
                    seen.add(name)
                    out.append((arm, setting, seed))
    return out


def cell_finetune_config(cfg: ExperimentConfig, arm: str, setting: str, seed: int) -> FinetuneConfig:
    kind, source, _ = ARM_SPECS[arm]
    b = cfg.base_config()
    d = b.to_dict()
    d.update(arms=[kind], seed=seed, output_dir=str(Path(cfg.work_dir) / cell_name(arm, setting, seed)),
             checkpoint_every=cfg.checkpoint_every, threads=cfg.threads, progress=cfg.progress,
             ontology={**b.ontology, "seed": seed}, vector_source=source or b.vector_source, resume=True)
    if kind == "lora" and cfg.no_prefix_budget == "qa":
        d["qa"] = {**d["qa"], "steps": b.qa.steps + cfg.align_examples(b) // cfg.step_examples(b.qa)}
    return FinetuneConfig.from_dict(d)


# ---- one cell ------------------------------------------------------------------------------------
def _excluded(evals) -> set[str]:
    return {c for qs in evals.values() for q in qs for c in q.codes + q.meta.get("option_codes", [])}


def caption_codes(fcfg: FinetuneConfig, vocab, evals) -> list[str]:
    """The alignment (or text-baseline) caption codes the job will draw for this cell."""
    if fcfg.arms[0] == "lora" or not fcfg.align.steps:
        return []
    n = fcfg.align.steps * fcfg.align.batch_size * fcfg.align.grad_accum
    return alignment_codes(vocab, fcfg, _excluded(evals))[: max(n, 1)]


def leak_check(vocab, train_qs, evals, captions) -> list[str]:
    """Held-out questions whose code, answer code/group or answer text training shows."""
    qs = list(train_qs) + [q for v in evals.values() for q in v]
    return find_leaks(qs, training_footprint(qs, vocab=vocab, caption_codes=captions))


def budget_of(curves: dict) -> dict:
    """Steps, examples, tokens and soft prefix positions per stage, read off the training curves."""
    out = {}
    for stage, curve in curves.items():
        out[stage] = {"steps": len(curve), "examples": int(sum(r.get("examples", 0) for r in curve)),
                      "tokens": int(sum(r["tokens"] for r in curve)),
                      "prefix_tokens": int(sum(r.get("prefix_tokens", 0) for r in curve)),
                      "seconds": float(curve[-1]["elapsed_s"]) if curve else 0.0}
    tot = {k: sum(v[k] for v in out.values()) for k in ("steps", "examples", "tokens", "prefix_tokens")}
    tot["tokens_with_prefix"] = tot["tokens"] + tot["prefix_tokens"]
    return {"stages": out, "total": tot}


def config_hash(cfg: ExperimentConfig, arm: str, setting: str, seed: int) -> str:
    fcfg = cell_finetune_config(cfg, arm, setting, seed).to_dict()
    for k in ("output_dir", "progress", "threads", "checkpoint_every", "resume", "device"):
        fcfg.pop(k, None)
    extra = [cfg.medtok_steps, cfg.medtok_batch_size, cfg.medtok_model, list(cfg.medtok_systems)] \
        if ARM_SPECS[arm][1] == "medtok" else []
    if cfg.task != "ontology":  # (the ontology task's hashes stay what they were before tasks existed)
        extra = extra + [cfg.task, config_key(cfg.relational, cfg.task)]
    return hashlib.sha256(json.dumps([fcfg, extra], sort_keys=True).encode()).hexdigest()[:16]


def run_cell(cfg: ExperimentConfig, arm: str, setting: str, seed: int, *, lm=None, tokenizer=None,
             questions_fn=None, medtok_inputs: dict | None = None, vectors_fn=None) -> dict:
    """Train and score one cell, write results_dir/<cell>.json; returns the record.

    questions_fn(fcfg) -> (vocab, train, {split: questions}) (default: the job's loader);
    medtok_inputs: vocab/graph/text_embeddings for MedTok training (tests; default: loaded);
    vectors_fn(arm, fcfg, medtok_dir) -> a vector source or None (tests; default: the job's)."""
    t0 = time.perf_counter()
    name = cell_name(arm, setting, seed)
    fcfg = cell_finetune_config(cfg, arm, setting, seed)
    if cfg.task == "relational_kg" and not fcfg.vocab_dir and questions_fn is None:
        # resolved here, not in the config: the cell's hash must not carry this machine's cache path
        fcfg = replace(fcfg, vocab_dir=str(kg_vocabulary_dir()))
    if questions_fn is None:
        questions_fn = load_questions if cfg.task == "ontology" else (
            lambda f: load_relational_questions(cfg.relational, f, task=cfg.task))
    vocab, train_qs, evals = questions_fn(fcfg)
    captions = caption_codes(fcfg, vocab, evals)
    leaks = leak_check(vocab, train_qs, evals, captions)
    if leaks:
        raise AssertionError(f"{name}: {len(leaks)} held-out questions leak into training, e.g. {leaks[:3]}")
    medtok_info, source = None, None
    if ARM_SPECS[arm][1] == "medtok":
        ckpt, medtok_info = medtok_stage(cfg, ARM_SPECS[arm][2], setting, seed, vocab, fcfg, medtok_inputs)
        fcfg = replace(fcfg, medtok_checkpoint=str(ckpt))
    if vectors_fn is not None:
        source = vectors_fn(arm, fcfg, Path(fcfg.medtok_checkpoint) if fcfg.medtok_checkpoint else None)
    res = finetune(fcfg, lm=lm, tokenizer=tokenizer, questions=(vocab, train_qs, evals), vector_source=source)
    r = res["arms"][fcfg.arms[0]]
    drawn = res.get("align_codes") or res.get("text_align_codes") or []
    if sorted(drawn) != sorted(captions):
        raise AssertionError(f"{name}: the job captioned other codes than the leak check saw")
    by_id = {q.id: q for qs in evals.values() for q in qs}
    scores = {}
    for scoring, per in r["scores"].items():
        if "@" in scoring:
            continue
        scores[scoring] = {}
        for split, v in per.items():
            if split == "train_probe":
                continue
            c = np.array(v["correct"], dtype=bool)
            scores[scoring][split] = {**accuracy_with_ci(c, seed=seed), "ids": v["ids"], "pred": v["pred"],
                                      "correct": [int(x) for x in c],
                                      "qtype": [by_id[i].meta.get("qtype", "ontology") for i in v["ids"]]}
    rec = {"cell": name, "arm": arm, "setting": "shared" if shared_across_settings(arm) else setting, "seed": seed,
           "config_hash": config_hash(cfg, arm, setting, seed), "arm_kind": fcfg.arms[0],
           "vector_source": ARM_SPECS[arm][1], "medtok": medtok_info, "scores": scores,
           "budget": budget_of(r["curves"]), "n_train": len(train_qs), "n_captions": len(captions),
           "leaks": leaks, "final_loss": {s: float(np.mean([x["loss"] for x in c[-10:]])) for s, c in r["curves"].items() if c},
           "wall_s": time.perf_counter() - t0,
           "provenance": {k: res.get("provenance", {}).get(k) for k in ("versions", "git", "torch_threads", "fingerprints")}}
    path = Path(cfg.results_dir) / f"{name}.json"
    atomic_write_text(path, json.dumps(rec))
    print(f"[cell] {name}: " + ", ".join(f"{sc} {v['test']['accuracy']:.3f}" for sc, v in scores.items() if "test" in v)
          + f" | budget {rec['budget']['total']} | {rec['wall_s']:.0f} s", flush=True)
    return rec


def finished(cfg: ExperimentConfig, arm: str, setting: str, seed: int) -> bool:
    path = Path(cfg.results_dir) / f"{cell_name(arm, setting, seed)}.json"
    if not path.exists():
        return False
    try:
        return json.loads(path.read_text()).get("config_hash") == config_hash(cfg, arm, setting, seed)
    except json.JSONDecodeError:
        return False


def run_experiment(cfg: ExperimentConfig, *, lm=None, tokenizer=None, limit: int | None = None,
                   shard: tuple[int, int] | None = None, **kwargs) -> list[str]:
    """Every unfinished cell in order (finished ones, same config hash, are skipped); returns
    the names of the cells run. `limit`: stop after that many cells. `shard=(i, n)`: only cells
    i, i + n, i + 2n, ... of the whole grid (fixed by the grid, not by what is finished, so n
    workers never take the same cell; every cell trains its own MedTok, so cells are independent)."""
    import torch

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    grid = cells(cfg)
    if shard is not None:
        i, n = shard
        if not 0 <= i < n:
            raise ValueError(f"shard {shard}: need 0 <= i < n")
        grid = grid[i::n]
    todo = [c for c in grid if not finished(cfg, *c)]
    print(f"prefix experiment: {len(grid)} cells{f' (shard {shard[0]} of {shard[1]})' if shard else ''}, "
          f"{len(grid) - len(todo)} finished, "
          f"budget {cfg.budget_examples()} examples per arm", flush=True)
    if todo and lm is None:

        lm, tokenizer = load_base_lm(cfg.base_config().adapter)
    done = []
    for arm, setting, seed in todo[:limit]:
        print(f"\n[cell {len(done) + 1}/{len(todo)}] {cell_name(arm, setting, seed)}", flush=True)
        run_cell(cfg, arm, setting, seed, lm=lm, tokenizer=tokenizer, **kwargs)
        done.append(cell_name(arm, setting, seed))
    return done

