"""Score a causal LM on a multiple-choice set and report accuracy with 95% CIs.

    evaluate(EvalConfig(...))            load model + dataset, score, write JSON, print the table
    evaluate_questions(model, tok, qs)   the same on objects already in memory (the adapter's
                                         "LLM + MedTok" system passes its `input_builder`)
    merge_results([r1, r2, ...])         one system's runs on disjoint sets -> one results dict
    compare_results(a, b)                paired comparison (overall and per group) on shared ids
    format_table([results, ...])         the printed table (`qa.report` format); second and
                                         later systems are compared with the first
Every results file carries `provenance` (`qa.report.provenance`): versions, threads, seed,
fingerprints of the model files and of the questions scored.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from medbase.jsonconfig import JsonConfig
from medbase.paths import PROJECT_ROOT
from medbase.provenance import files_fingerprint, load_results, provenance, questions_fingerprint, save_results
from qa.datasets import load_dataset
from qa.lm import load_causal_lm
from qa.metrics import accuracy_with_ci, paired_comparison
from qa.results_format import accuracy_table, comparison_block
from qa.scoring import ScoreResult, generate_multiple_choice, score_multiple_choice
from qa.types import LETTERS, MCQuestion

DTYPES = ("float32", "bfloat16", "float16")
MODES = ("loglik", "generate")


@dataclass
class EvalConfig(JsonConfig):
    model: str | None = None          # None / "smollm2" = embedded SmolLM2-135M-Instruct; else a local HF dir or hub id
    dataset: str = "meddx"            # see qa.datasets.dataset_names()
    data_path: str | None = None      # dataset file (meddx: default ../shared/data/qa/MedDDx.json)
    split: str | None = None          # split or difficulty filter; None = all
    limit: int | None = None          # first N questions after filtering (quick runs)
    batch_size: int = 8
    mode: str = "loglik"              # "loglik": option-letter log-likelihood; "generate": greedy + letter parsing
    dtype: str = "float32"
    device: str = "cpu"
    n_boot: int = 10_000
    seed: int = 0                     # bootstrap seed
    system: str | None = None         # name in tables (default: the model name)
    output: str | None = None         # JSON path (default runs/eval/<dataset>[-<split>]-<system>.json)
    dataset_kwargs: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1 or None, got {self.limit}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.n_boot < 100:
            raise ValueError(f"n_boot must be >= 100, got {self.n_boot}")

    @property
    def system_name(self) -> str:
        return self.system or (Path(self.model).name if self.model else "smollm2-135m")


def _groups(q: MCQuestion) -> list[str]:
    out = [f"split:{q.split}"]
    if q.meta.get("difficulty"):
        out.append(f"difficulty:{q.meta['difficulty']}")
    return out


def letter_counts(per_question: list[dict]) -> dict:
    """How often each letter was predicted and was the answer: a position bias shows at a glance
    (e.g. a small model answering "A" to everything scores the share of A answers)."""

    def count(key):
        c: dict[str, int] = {}
        for rec in per_question:
            letter = LETTERS[rec[key]] if rec[key] >= 0 else "none"
            c[letter] = c.get(letter, 0) + 1
        return dict(sorted(c.items()))

    return {"pred": count("pred"), "answer": count("answer")}


def results_from_scores(questions: list[MCQuestion], score: ScoreResult, *, system: str, n_boot: int = 10_000,
                        seed: int = 0, extra: dict | None = None) -> dict:
    """Results dict (overall + per split / difficulty accuracy with bootstrap CIs, per-question
    records) from a ScoreResult over `questions` (same order)."""
    if [q.id for q in questions] != list(score.ids):
        raise ValueError("score ids do not match the questions")
    correct = np.asarray(score.correct, dtype=bool)
    groups: dict[str, list[int]] = {}
    for i, q in enumerate(questions):
        for g in _groups(q):
            groups.setdefault(g, []).append(i)
    per_question = []
    for i, q in enumerate(questions):
        rec = {"id": q.id, "pred": int(score.pred[i]), "answer": int(q.answer), "correct": bool(correct[i]),
               "groups": _groups(q)}
        lp = score.letter_logprobs[i, : len(q.options)] if score.letter_logprobs is not None else None
        if lp is not None and np.isfinite(lp).all():
            rec["letter_logprobs"] = [round(float(x), 4) for x in lp]
        if score.texts is not None:
            rec["text"] = score.texts[i]
        per_question.append(rec)
    return {
        "system": system,
        "n": len(questions),
        "overall": accuracy_with_ci(correct, n_boot=n_boot, seed=seed),
        "groups": {g: accuracy_with_ci(correct[idx], n_boot=n_boot, seed=seed) for g, idx in sorted(groups.items())},
        "letter_counts": letter_counts(per_question),
        "per_question": per_question,
        **(extra or {}),
    }


def evaluate_questions(model, tokenizer, questions: list[MCQuestion], *, system: str = "LLM", batch_size: int = 8,
                       input_builder=None, mode: str = "loglik", n_boot: int = 10_000, seed: int = 0,
                       progress: bool = True, extra: dict | None = None, max_new_tokens: int = 16) -> dict:
    """Score `questions` with an in-memory model (optionally through an adapter's input builder).
    `max_new_tokens` applies to mode="generate" only."""
    t0 = time.perf_counter()
    if mode == "loglik":
        score = score_multiple_choice(model, tokenizer, questions, batch_size=batch_size,
                                      input_builder=input_builder, progress=progress)
    elif mode == "generate":
        score = generate_multiple_choice(model, tokenizer, questions, batch_size=batch_size,
                                         input_builder=input_builder, progress=progress,
                                         max_new_tokens=max_new_tokens)
    else:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    seconds = time.perf_counter() - t0
    info = {"mode": mode, "seconds": round(seconds, 2),
            "seconds_per_question": round(seconds / max(len(questions), 1), 4), **(extra or {})}
    return results_from_scores(questions, score, system=system, n_boot=n_boot, seed=seed, extra=info)


def _default_output(cfg: EvalConfig) -> Path:
    parts = [cfg.dataset] + ([cfg.split] if cfg.split else []) + [cfg.system_name]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(parts))
    return PROJECT_ROOT / "runs" / "eval" / f"{name}.json"


def _model_fingerprint(name_or_path: str | None) -> str | None:
    """The weights and config files of a local model directory (None for hub ids / the embedded model,
    whose package version is in the provenance's library versions)."""
    d = Path(name_or_path) if name_or_path else None
    if d is None or not d.is_dir():
        return None
    files = sorted(p for p in d.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors", ".bin", ".gguf"))
    return files_fingerprint(files, d) if files else None


def evaluate(config: EvalConfig, *, model=None, tokenizer=None, print_table: bool = True) -> dict:
    """Load the dataset (and the model unless given), score, write JSON, print the table."""
    questions = load_dataset(config.dataset, config.data_path, split=config.split, **config.dataset_kwargs)
    if config.limit is not None:
        questions = questions[: config.limit]
    if not questions:
        raise ValueError(f"no questions in dataset {config.dataset!r} split {config.split!r}")
    if model is None:
        model, tokenizer = load_causal_lm(config.model, dtype=getattr(torch, config.dtype))
        model.to(config.device)
    results = evaluate_questions(model, tokenizer, questions, system=config.system_name, batch_size=config.batch_size,
                                 mode=config.mode, n_boot=config.n_boot, seed=config.seed,
                                 extra={"model": config.model or "smollm2", "dataset": config.dataset,
                                        "config": config.to_dict()})
    data_file = Path(config.data_path) if config.data_path else None
    results["provenance"] = provenance(
        seeds={"bootstrap": config.seed}, device=str(next(model.parameters()).device),
        fingerprints={"model": _model_fingerprint(config.model),
                      "data_file": files_fingerprint([data_file]) if data_file and data_file.is_file() else None,
                      "questions": questions_fingerprint(questions)})
    out = Path(config.output) if config.output else _default_output(config)
    save_results(results, out)
    results["output"] = str(out)
    if print_table:
        print(format_table(results))
        print(f"results: {out}")
    return results


def merge_results(runs: list[dict], *, system: str | None = None, n_boot: int = 10_000, seed: int = 0) -> dict:
    """One results dict from runs of the same system on disjoint question sets (e.g. one run
    per MedDDx difficulty): per-question records concatenated, accuracies and CIs recomputed."""
    seen: set[str] = set()
    per_question = []
    for r in runs:
        for rec in r["per_question"]:
            if rec["id"] in seen:
                raise ValueError(f"question {rec['id']} appears in more than one run")
            seen.add(rec["id"])
            per_question.append(rec)
    correct = np.array([rec["correct"] for rec in per_question], dtype=bool)
    groups: dict[str, list[int]] = {}
    for i, rec in enumerate(per_question):
        for g in rec.get("groups", []):
            groups.setdefault(g, []).append(i)
    seconds = sum(r.get("seconds", 0.0) for r in runs)
    return {"system": system or runs[0]["system"], "n": len(per_question),
            "overall": accuracy_with_ci(correct, n_boot=n_boot, seed=seed),
            "groups": {g: accuracy_with_ci(correct[idx], n_boot=n_boot, seed=seed) for g, idx in sorted(groups.items())},
            "letter_counts": letter_counts(per_question), "per_question": per_question,
            "seconds": round(seconds, 2),
            "seconds_per_question": round(seconds / max(len(per_question), 1), 4),
            "merged_from": [r.get("output") or r.get("config", {}).get("output") for r in runs]}


def table_of_saved(paths: list[str | Path], *, merge_to: str | Path | None = None, system: str | None = None,
                   n_boot: int = 10_000, seed: int = 0) -> str:
    """The table of saved results files (first = baseline of the paired comparisons); with
    `merge_to`, the runs (one system, disjoint questions) are first merged into that file."""
    runs = [load_results(f) for f in paths]
    if merge_to:
        runs = [merge_results(runs, system=system, n_boot=n_boot, seed=seed)]
        save_results(runs[0], merge_to)
    return format_table(runs, n_boot=n_boot, seed=seed)


def _correct_by_id(results: dict) -> dict[str, tuple[bool, list[str]]]:
    return {r["id"]: (bool(r["correct"]), r.get("groups", [])) for r in results["per_question"]}


def compare_results(a: dict, b: dict, *, n_boot: int = 10_000, seed: int = 0) -> dict:
    """System b minus system a on the questions both answered: overall and per group
    (diff with paired-bootstrap 95% CI, McNemar p)."""
    ca, cb = _correct_by_id(a), _correct_by_id(b)
    shared = [i for i in ca if i in cb]
    if not shared:
        raise ValueError(f"{a.get('system')} and {b.get('system')} share no question ids")
    va = np.array([ca[i][0] for i in shared])
    vb = np.array([cb[i][0] for i in shared])
    out = {"a": a.get("system"), "b": b.get("system"),
           "overall": paired_comparison(va, vb, n_boot=n_boot, seed=seed), "groups": {}}
    groups = sorted({g for i in shared for g in ca[i][1]})
    for g in groups:
        m = np.array([g in ca[i][1] for i in shared])
        out["groups"][g] = paired_comparison(va[m], vb[m], n_boot=n_boot, seed=seed)
    return out


def format_table(results: dict | list[dict], *, n_boot: int = 10_000, seed: int = 0) -> str:
    """Accuracy (%) with 95% CI per system (rows) and group (columns); systems after the first
    get a paired comparison against the first (diff in points, CI, McNemar p). `qa.report` format."""
    runs = [results] if isinstance(results, dict) else list(results)
    if not runs:
        return "(no results)"
    n_all = {r["n"] for r in runs}
    # a group covering every question repeats "overall"; leave it out
    cols = sorted({g for r in runs for g, v in r["groups"].items() if v["n"] not in n_all})
    cols = ["overall"] + sorted(cols, key=lambda g: (not g.startswith("difficulty"), g))
    rows = {}
    for i, r in enumerate(runs):
        name = r["system"] if r["system"] not in rows else f"{r['system']} ({i + 1})"
        rows[name] = {"overall": r["overall"], **r["groups"]}
    blocks = [accuracy_table(rows, cols)]
    for other in runs[1:]:
        cmp = compare_results(runs[0], other, n_boot=n_boot, seed=seed)
        per = {c: cmp["overall"] if c == "overall" else cmp["groups"][c] for c in cols
               if c == "overall" or c in cmp["groups"]}
        blocks.append(comparison_block(cmp["b"], cmp["a"], per))
    return "\n\n".join(blocks)
