"""The synthetic-cohort experiment: every generator scenario (hierarchy, cross-cutting,
code-level, null) x tokenizers, plus the 8-combination hierarchy level ablation on the
hierarchy scenario, resumable cell by cell (hours on 2 cores; kill it and start it again).

    run_suite(SuiteConfig(out="runs/ehr_synthetic", n_patients=10000))

Layout: `<out>/data/<scenario>` (the synthetic MEDS cohorts, generated once),
`<out>/<scenario>/` (each scenario's grid: cells, results, report), `<out>/suite_report.md`
and `suite.json` (all scenarios side by side: AUPRC per tokenizer overall and on the "rare"
slice, paired differences to flat, and the null-scenario check; total wall time).

Phases (so an interrupted run has balanced partial results): (1) seed 0 of the main
tokenizers on every scenario, (2) the level ablation at seed 0, (3) the remaining seeds.
Inputs are diagnosis / procedure codes (plus sex and admission markers): the cohort's lab and
drug events carry no code-level signal and would multiply the sequence length.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from ehr.benchmark.cells import BenchConfig
from ehr.benchmark.runner import GridConfig, run_grid
from ehr.benchmark.tokenizers import ABLATION_TOKENIZERS
from medbase.atomic import atomic_write_text
from medbase.jsonconfig import JsonConfig

SCENARIOS = ("hierarchy", "cross-cutting", "code-level", "null")
SUITE_TOKENIZERS = ["flat", "hier-111", "text", "medtok", "medtok-text", "medtok-graph", "medtok-ids", "medtok-n3000"]
KEEP = "^(ICD10CM|ICD10PCS|ICD9CM|ICD9PCS|GENDER//|HOSPITAL_ADMISSION//)"


@dataclass
class SuiteConfig(JsonConfig):
    out: str = "runs/ehr_synthetic"
    n_patients: int = 10000
    scenarios: list = field(default_factory=lambda: list(SCENARIOS))
    tasks: list = field(default_factory=lambda: ["readmission:ehrshot_30d"])
    tokenizers: list = field(default_factory=lambda: list(SUITE_TOKENIZERS))
    models: list = field(default_factory=lambda: ["transformer", "gbt"])
    seeds: list = field(default_factory=lambda: [0, 1, 2])
    ablation: bool = True
    workers: int = 2
    threads: int = 1
    rare_train_subjects: int = 10
    bench: dict = field(default_factory=lambda: BenchConfig().to_dict())
    keep_codes: str = KEEP
    progress: bool = True
    compute: bool = True          # False: only the reports, from the cells finished so far


def _grid(cfg: SuiteConfig, scenario: str, tokenizers: list, models: list, seeds: list, report: bool) -> dict:
    if not cfg.compute and not (Path(cfg.out) / "data" / scenario / "synthetic" / "config.json").exists():
        return {"records": [], "summary": []}
    return run_grid(GridConfig(compute=cfg.compute, dataset="synthetic", root=str(Path(cfg.out) / "data" / scenario),
                               out=str(Path(cfg.out) / scenario), tasks=cfg.tasks, tokenizers=tokenizers,
                               models=models, seeds=seeds, workers=cfg.workers, threads=cfg.threads, bench=cfg.bench,
                               synthetic_patients=cfg.n_patients, synthetic_scenario=scenario,
                               rare_train_subjects=cfg.rare_train_subjects, keep_codes=cfg.keep_codes,
                               progress=cfg.progress, report=report))


def run_suite(cfg: SuiteConfig) -> dict:
    t0 = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.compute:
        cfg.save(out / "suite_config.json")
    abl = [t for t in ABLATION_TOKENIZERS if t != "hier-000"] if cfg.ablation else []
    phases = [(s, cfg.tokenizers, cfg.models, cfg.seeds[:1]) for s in cfg.scenarios]
    if abl and "hierarchy" in cfg.scenarios:
        phases.append(("hierarchy", abl, cfg.models, cfg.seeds[:1]))
    phases += [(s, cfg.tokenizers, cfg.models, cfg.seeds) for s in cfg.scenarios]
    if abl and "hierarchy" in cfg.scenarios:
        phases.append(("hierarchy", abl, cfg.models, cfg.seeds))
    log = []
    for scenario, toks, models, seeds in (phases if cfg.compute else []):
        t = time.perf_counter()
        _grid(cfg, scenario, toks, models, seeds, report=False)
        log.append({"scenario": scenario, "tokenizers": toks, "seeds": seeds, "seconds": time.perf_counter() - t})
        atomic_write_text(out / "suite_progress.json", json.dumps(log, indent=1) + "\n")
    results = {}
    for s in cfg.scenarios:   # final pass: every cell of a scenario (all reused) in one grid, with its report
        toks = list(dict.fromkeys(cfg.tokenizers + (abl if s == "hierarchy" else [])))
        results[s] = _grid(cfg, s, toks, cfg.models, cfg.seeds, report=True)
        if not results[s]["records"]:
            results.pop(s)
    summary = [r for s in results.values() for r in s["summary"]]
    wall = time.perf_counter() - t0
    report = suite_report(summary, cfg, wall)
    (out / ("suite_report.md" if cfg.compute else "suite_report_partial.md")).write_text(report)
    name = "suite.json" if cfg.compute else "suite_partial.json"
    atomic_write_text(out / name, json.dumps({"config": cfg.to_dict(), "wall_seconds_this_run": wall,
                                              "phases": log, "summary": summary}, indent=1, default=str) + "\n")
    return {"summary": summary, "report": report, "wall_seconds": wall}


def _f(x, nd=3):
    return "–" if x is None or x != x else f"{x:.{nd}f}"


def suite_report(summary: list[dict], cfg: SuiteConfig, wall: float) -> str:
    lines = [f"# Synthetic cohort: tokenizers across generator scenarios\n",
             f"{cfg.n_patients:,} synthetic patients per scenario (`ehr.synthetic.cohort`), task(s) {', '.join(cfg.tasks)}; "
             f"inputs: diagnosis/procedure codes, sex, admission markers; models {', '.join(cfg.models)}; seeds "
             f"{cfg.seeds} (bag-of-codes models: one deterministic fit). AUPRC mean ± sd over seeds, [95% CI of the seed mean, patient bootstrap]; Δ = paired "
             f"difference to flat on the same replicates. 'rare' = test patients whose informative codes each occur in "
             f"≤ {cfg.rare_train_subjects} training patients. Wall time of this invocation: {wall / 3600:.2f} h "
             f"(cells finished by earlier invocations are reused, not recomputed).\n"]
    for model in cfg.models:
        rows = [r for r in summary if r["model"] == model and r["tokenizer"] in cfg.tokenizers]
        if not rows:
            continue
        lines.append(f"\n## {model}\n")
        lines.append("| scenario | slice | n test | prevalence | " + " | ".join(cfg.tokenizers) + " |")
        lines.append("|---|---|---|---|" + "---|" * len(cfg.tokenizers))
        for s in cfg.scenarios:
            for sl in sorted({r["slice"] for r in rows if r["dataset"].endswith(s)}):
                sub = {r["tokenizer"]: r for r in rows if r["dataset"].endswith(s) and r["slice"] == sl}
                if not sub:
                    continue
                r0 = next(iter(sub.values()))
                cells = []
                for t in cfg.tokenizers:
                    r = sub.get(t)
                    if r is None:
                        cells.append("–")
                        continue
                    sd = f" ± {_f(r['auprc_sd'])}" if r["seeds"] > 1 else ""
                    c = f"{_f(r['auprc_mean'])}{sd} [{_f(r['auprc_lo'])}, {_f(r['auprc_hi'])}]"
                    if "diff_vs_flat" in r:
                        c += f"<br>Δ {_f(r['diff_vs_flat'])} [{_f(r['diff_lo'])}, {_f(r['diff_hi'])}]"
                    cells.append(c)
                lines.append(f"| {s} | {sl} | {r0['n_test']} | {_f(r0['prevalence'])} | " + " | ".join(cells) + " |")
    null = [r for r in summary if r["dataset"].endswith("null") and "diff_vs_flat" in r and r["slice"] == "all"]
    if null:
        wins = [r for r in null if r["diff_lo"] > 0]
        lines.append(f"\n**Null scenario check**: {len(wins)} of {len(null)} tokenizer-vs-flat comparisons have a "
                     f"95% CI above 0" + (": " + ", ".join(f"{r['model']}/{r['tokenizer']}" for r in wins) if wins else
                                           " (no tokenizer 'wins' when outcomes do not depend on codes)") + ".")
    return "\n".join(lines) + "\n"
