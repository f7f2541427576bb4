"""The benchmark grid: dataset x task x model x tokenizer x seed, resumable cell by cell.

    summary = run_grid(GridConfig(dataset="mimic3", root="../shared/data/ehr/mimic3-demo",
                                  out="runs/ehr_mimic3"))

1. load (convert once) the cohort, build every task's samples and the frozen resources;
2. enumerate the cells; a cell whose result file exists is read, never recomputed (so an
   interrupted run continues where it stopped: kill it at any time and start it again);
3. run the missing cells (`workers` processes, each with `threads` torch threads; cells of a
   grid are independent), with a tqdm bar;
4. write `results.csv` / `results.json` (one row per cell), `summary.csv` / `summary.json`
   (seed means, CIs, paired differences to flat), `report.md` (the paper's Table 3 layout
   and the other tables) and plots. Every file carries the task presets, the data
   fingerprint and all configs (`run.json` beside them holds the full grid config).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from ehr.benchmark.cells import DEFAULT_MODELS, MODELS, BenchConfig, cell_path, execute_cell, read_cell
from ehr.benchmark.data import SyntheticSpec, load_cohort
from ehr.benchmark.models.gbt import TREE_MODELS
from ehr.benchmark.paper_report import write_paper_report
from ehr.benchmark.paper_stats import count_above_zero, paper_summary
from ehr.benchmark.prepare import Prepared, default_task_specs, prepare
from ehr.benchmark.report import write_report
from ehr.benchmark.summary import result_row, summarize
from ehr.benchmark.tokenizers import DEFAULT_TOKENIZERS, parse_spec
from medbase.atomic import atomic_write_text
from medbase.jsonconfig import JsonConfig

log = logging.getLogger(__name__)


@dataclass
class GridConfig(JsonConfig):
    dataset: str = "mimic3"
    root: str = ""
    out: str = "runs/ehr_benchmark"
    tasks: list | None = None                  # "name" or "name:preset"; None = every default task
    tokenizers: list = field(default_factory=lambda: list(DEFAULT_TOKENIZERS))
    models: list = field(default_factory=lambda: list(DEFAULT_MODELS))
    seeds: list = field(default_factory=lambda: [0, 1, 2])
    workers: int = 1
    threads: int = 1
    max_len: int = 256
    bench: dict = field(default_factory=lambda: BenchConfig().to_dict())
    synthetic_patients: int = 2000
    synthetic_scenario: str = "hierarchy"
    synthetic_seed: int = 0
    rare_train_subjects: int = 10              # synthetic "rare" slice: informative codes in <= this many train patients
    keep_codes: str | None = None              # regex: only these codes become tokens (None = all)
    build_medtok: bool = True
    progress: bool = True
    report: bool = True
    compute: bool = True                       # False: report on the finished cells only (no training)
    # issue 22: a finished cell without tuning-split predictions (written before F1-macro existed)
    # counts as missing and is rerun (same seed: the same test predictions); False: reused as is
    require_tuning_predictions: bool = False
    paper_metrics: bool = True                 # write paper_metrics.{csv,json} (F1, DeLong, k of n)

    def __post_init__(self):
        for t in self.tokenizers:
            parse_spec(t)
        bad = [m for m in self.models if m not in MODELS]
        if bad:
            raise ValueError(f"unknown models {bad}; known: {MODELS}")
        if self.workers < 1 or self.threads < 1 or not self.seeds:
            raise ValueError("workers >= 1, threads >= 1 and at least one seed required")
        BenchConfig.from_dict(self.bench)


# ---- worker side ------------------------------------------------------------------------
_STATE: dict = {}


def _watch_parent(parent: int) -> None:
    """End this worker when the grid process is gone (killed runs leave no orphans computing)."""
    import threading

    def loop():
        while True:
            time.sleep(5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=loop, daemon=True).start()


def _init_worker(state_file: str, threads: int, parent: int | None = None) -> None:
    import torch

    if parent is not None:
        _watch_parent(parent)
    torch.set_num_threads(threads)
    with open(state_file, "rb") as f:
        _STATE.update(pickle.load(f))


def _run_job(job: tuple) -> dict:
    path, bi, model, tok, seed = job
    s = _STATE
    return execute_cell(Path(path), s["dataset"], s["fingerprint"], s["bundles"][bi], s["space"], s["resources"],
                        model, tok, seed, s["cfg"])


# ---- driver -------------------------------------------------------------------------------
def enumerate_cells(prep: Prepared, cfg: GridConfig, bench: BenchConfig) -> list[tuple]:
    jobs = []
    # seed-major order: an interrupted grid has every tokenizer at seed 0 before any at seed 1
    for seed in cfg.seeds:
        for bi, b in enumerate(prep.bundles):
            if b.skipped:
                continue
            for model in cfg.models:
                # the bag-of-codes baselines are deterministic (no subsampling): one fit, not one per seed
                if model in TREE_MODELS and seed != cfg.seeds[0]:
                    continue
                for tok in cfg.tokenizers:
                    if model in TREE_MODELS and _tree_duplicate(tok):
                        continue
                    # the input rules (token filter, sequence cap) are part of the data a cell saw
                    # (the defaults add nothing, so cells written before the rules existed stay valid)
                    rules = (prep.info.get("keep_codes"), prep.info.get("max_len", 256))
                    data_key = prep.cohort.fingerprint if rules == (None, 256) else f"{prep.cohort.fingerprint}|{rules}"
                    key = bench.key(data_key, b.key, model, tok)
                    jobs.append((str(cell_path(Path(cfg.out), prep.cohort.name, b, model, tok, seed, key)), bi, model,
                                 tok, seed))
    return jobs


def _tree_duplicate(tok: str) -> bool:
    """Issue-22 arms whose bag-of-codes features equal another arm's (X+flat / X-init: X's;
    graph-*: flat's): no tree cell for them (it would repeat that arm's cell)."""
    p = parse_spec(tok)
    return bool(p.get("integration")) or p["family"] == "graph"


def run_cells(prep: Prepared, jobs: list[tuple], cfg: GridConfig, bench: BenchConfig) -> list[dict]:
    """Finished cells are read; the others run (in `cfg.workers` processes) and are written."""
    from tqdm.auto import tqdm

    records, todo = [], []
    for job in jobs:
        rec = _read(Path(job[0]), cfg)
        (records.append(rec) if rec is not None else todo.append(job))
    if not cfg.compute:
        log.info("report only: %d finished cells, %d not computed", len(records), len(todo))
        todo = []
    bar = tqdm(total=len(jobs), initial=len(records), desc=f"{prep.cohort.name} cells", unit="cell",
               disable=not cfg.progress)
    state = {"dataset": prep.cohort.name, "fingerprint": prep.cohort.fingerprint, "bundles": prep.bundles,
             "space": prep.space, "resources": prep.resources, "cfg": bench}
    if todo and cfg.workers > 1:
        import multiprocessing as mp

        # one state file per output dir (a killed run's file is simply overwritten next time)
        state_file = Path(cfg.out) / ".grid-state.pkl"
        with open(state_file, "wb") as f:
            pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            # spawn: a fresh interpreter per worker (forking after torch/OpenMP started can hang)
            ctx = mp.get_context("spawn")
            with ctx.Pool(cfg.workers, initializer=_init_worker,
                          initargs=(str(state_file), cfg.threads, os.getpid())) as pool:
                for rec in pool.imap_unordered(_run_job, todo):
                    records.append(rec)
                    bar.update(1)
        finally:
            state_file.unlink(missing_ok=True)
    elif todo:
        import torch

        torch.set_num_threads(cfg.threads)
        _STATE.clear()
        _STATE.update(state)
        for job in todo:
            records.append(_run_job(job))
            bar.update(1)
    bar.close()
    return records


def _read(path: Path, cfg: GridConfig) -> dict | None:
    rec = read_cell(path)
    if rec is not None and cfg.require_tuning_predictions and not Path(rec.get("tuning_predictions_file", "")).exists():
        return None
    return rec


def synthetic_slices(prep: Prepared, rare: int) -> dict:
    """{'all': None, 'rare': test subjects whose informative codes are all in <= `rare` training
    patients} for a synthetic cohort with truth (else only 'all')."""
    truth = prep.cohort.truth
    if truth is None or "min_informative_train_subjects" not in truth.columns:
        return {"all": None}
    sub = truth.filter(pl.col("min_informative_train_subjects").is_not_null()
                       & (pl.col("min_informative_train_subjects") <= rare))
    return {"all": None, f"rare(<={rare} train pts)": set(sub["subject_id"].to_list())}


def write_tables(records: list[dict], summary: list[dict], out: Path, meta: dict) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    rows = [result_row(r) for r in records]
    paths = {}
    if rows:
        df = pl.DataFrame(rows, infer_schema_length=None).sort("dataset", "task", "preset", "model", "tokenizer", "seed")
        df.write_csv(out / "results.csv")
        paths["results_csv"] = str(out / "results.csv")
    atomic_write_text(out / "results.json", json.dumps({**meta, "rows": rows}, indent=1, default=str) + "\n")
    if summary:
        pl.DataFrame(summary, infer_schema_length=None).write_csv(out / "summary.csv")
    atomic_write_text(out / "summary.json", json.dumps({**meta, "rows": summary}, indent=1, default=str) + "\n")
    paths.update(results_json=str(out / "results.json"), summary_json=str(out / "summary.json"))
    return paths


def run_grid(cfg: GridConfig, prepared: Prepared | None = None, vectors: dict | None = None) -> dict:
    t0 = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    bench = BenchConfig.from_dict(cfg.bench)
    if prepared is None:
        cohort = load_cohort(cfg.dataset, cfg.root, SyntheticSpec(cfg.synthetic_patients, cfg.synthetic_scenario,
                                                                  cfg.synthetic_seed), progress=cfg.progress)
        prepared = prepare(cohort, cfg.tasks or default_task_specs(), cfg.tokenizers,
                           sequence_length(bench, cfg), bench.medtok_steps, cfg.progress, vectors, cfg.build_medtok,
                           keep_codes=cfg.keep_codes)
    t_prep = time.perf_counter() - t0
    jobs = enumerate_cells(prepared, cfg, bench)
    n_done_before = sum(1 for j in jobs if _read(Path(j[0]), cfg) is not None)
    t1 = time.perf_counter()
    records = run_cells(prepared, jobs, cfg, bench)
    t_cells = time.perf_counter() - t1
    slices = synthetic_slices(prepared, cfg.rare_train_subjects)
    summary = summarize(records, slices, bench.n_boot, bench.boot_seed)
    meta = {"grid_config": cfg.to_dict(), "bench_config": bench.to_dict(), "dataset": prepared.cohort.name,
            "data_fingerprint": prepared.cohort.fingerprint, "dataset_meta": prepared.cohort.meta,
            "cohort": prepared.cohort.info, "prepare": prepared.info,
            "tasks": [{"task": b.name, "preset": b.preset, "key": b.key, "kind": b.kind, "definition": b.describe,
                       "skipped": b.skipped, "stats": b.stats} for b in prepared.bundles],
            "cells": len(jobs), "cells_reused": n_done_before, "cells_run": len(jobs) - n_done_before,
            "seconds": {"prepare": t_prep, "cells": t_cells}}
    paths = write_tables(records, summary, out, meta)
    if cfg.paper_metrics and records:
        paths.update(write_paper_metrics(records, slices, bench, out, meta))
    if cfg.report and records:

        paths.update(write_report(records, summary, out, meta, full_vocab=prepared.cohort.meds_dir is not None))
    meta["seconds"]["total"] = time.perf_counter() - t0
    atomic_write_text(out / "run.json", json.dumps({**meta, "outputs": paths}, indent=1, default=str) + "\n")
    return {**meta, "outputs": paths, "records": records, "summary": summary}


def write_paper_metrics(records: list[dict], slices: dict, bench: BenchConfig, out: Path, meta: dict) -> dict:
    """paper_metrics.{csv,json}: F1-macro, DeLong vs flat, paired bootstrap of AUPRC and F1, and
    the "k of n comparisons with a CI above 0" counts (`ehr.benchmark.paper_stats`; binary tasks),
    rendered as paper_report.md (+ the level-ablation plot; `ehr.benchmark.paper_report`)."""
    rows = paper_summary(records, slices, bench.n_boot, bench.boot_seed)
    counts = {m: count_above_zero(rows, m) for m in ("delong", "auprc_diff", "f1_diff")}
    if rows:
        pl.DataFrame([{k: (json.dumps(v) if isinstance(v, list) else v) for k, v in r.items()} for r in rows],
                     infer_schema_length=None).write_csv(out / "paper_metrics.csv")
    atomic_write_text(out / "paper_metrics.json", json.dumps({**meta, "above_zero": counts, "rows": rows}, indent=1,
                                                             default=str) + "\n")
    return {"paper_metrics_json": str(out / "paper_metrics.json"), **write_paper_report(records, rows, out)}


def sequence_length(bench: BenchConfig, cfg: GridConfig) -> int:
    """Sequences are built once at the model's max_len (the grid's `max_len` if it is smaller)."""
    return min(int(bench.model.get("max_len", cfg.max_len)), cfg.max_len)
