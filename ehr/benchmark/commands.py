"""The command behind `scripts/ehr_benchmark.py`: one function per mode, taking the parsed
flags as a dict (`run_command(vars(args))`), so the script itself only parses arguments."""

from __future__ import annotations

import json

from ehr.benchmark.cells import DEFAULT_MODELS, BenchConfig
from ehr.benchmark.code_vectors import MEDTOK_VARIANTS, medtok_vectors
from ehr.benchmark.data import SyntheticSpec, load_cohort
from ehr.benchmark.prepare import prepare
from ehr.benchmark.runner import GridConfig, run_grid
from ehr.benchmark.synthetic_suite import SCENARIOS, SuiteConfig, run_suite
from ehr.benchmark.throughput import measure_throughput
from ehr.benchmark.tokenizers import ABLATION_TOKENIZERS, DEFAULT_TOKENIZERS
from ehr.benchmark.transfer import TransferConfig, run_transfer


def expand_tokenizers(specs: list[str]) -> list[str]:
    """'ablation' -> the 8 hier-XYZ combinations; duplicates dropped, order kept."""
    out = []
    for t in specs:
        out += ABLATION_TOKENIZERS if t == "ablation" else [t]
    return list(dict.fromkeys(out))


def bench_config(a: dict) -> BenchConfig:
    bench = BenchConfig(n_boot=a["n_boot"], medtok_steps=a["medtok_steps"])
    if a.get("max_epochs"):
        bench.train["max_epochs"] = a["max_epochs"]
    return bench


def common_args(a: dict) -> dict:
    return dict(tasks=a["tasks"], tokenizers=expand_tokenizers(a["tokenizers"]), models=a["models"], seeds=a["seeds"],
                workers=a["workers"], threads=a["threads"], bench=bench_config(a).to_dict(),
                synthetic_patients=a["synthetic_patients"], synthetic_seed=a["synthetic_seed"],
                rare_train_subjects=a["rare_train_subjects"], build_medtok=not a["no_build_medtok"],
                progress=not a["no_progress"])


def build_medtok_cmd(a: dict) -> str:

    lines = []
    for v in MEDTOK_VARIANTS:
        cv = medtok_vectors(a["systems"], v, a["medtok_steps"], progress=not a["no_progress"])
        lines.append(f"{'+'.join(a['systems'])} {v}: {len(cv.code_ids)} codes ({cv.source})")
    return "\n".join(lines)


def throughput_cmd(a: dict) -> str:
    import torch


    torch.set_num_threads(a["threads"])
    toks = expand_tokenizers(a["tokenizers"])
    cohort = load_cohort(a["dataset"], a["root"], SyntheticSpec(a["synthetic_patients"], a["synthetic_scenario"],
                                                                a["synthetic_seed"]))
    prep = prepare(cohort, (a["tasks"] or ["readmission:ehrshot_30d"])[:1], toks, medtok_steps=a["medtok_steps"],
                   keep_codes=a["keep_codes"])
    rows = measure_throughput(prep, 0, [m for m in a["models"] if m in ("transformer", "behrt")], toks)
    return "\n".join(json.dumps(r) for r in rows)


def suite_cmd(a: dict) -> str:

    d = SuiteConfig()
    kw = {"keep_codes": a["keep_codes"]} if a["keep_codes"] else {}
    cfg = SuiteConfig(out=a["out"], n_patients=a["synthetic_patients"], scenarios=a["scenarios"] or list(SCENARIOS),
                      tasks=a["tasks"] or d.tasks,
                      tokenizers=expand_tokenizers(a["tokenizers"]) if a["tokenizers"] != DEFAULT_TOKENIZERS else d.tokenizers,
                      models=a["models"] if a["models"] != DEFAULT_MODELS else d.models, seeds=a["seeds"],
                      workers=a["workers"], threads=a["threads"], bench=bench_config(a).to_dict(),
                      rare_train_subjects=a["rare_train_subjects"], progress=not a["no_progress"],
                      compute=not a.get("report_only"), **kw)
    return run_suite(cfg)["report"]


def transfer_cmd(a: dict) -> str:

    common = {k: v for k, v in common_args(a).items() if k not in ("workers", "rare_train_subjects")}
    cfg = TransferConfig(source_dataset=a["dataset"], source_root=a["root"],
                         target_dataset=a["target_dataset"] or a["dataset"], target_root=a["target_root"], out=a["out"],
                         synthetic_scenario=a["synthetic_scenario"],
                         target_synthetic_scenario=a["target_synthetic_scenario"] or a["synthetic_scenario"],
                         keep_codes=a["keep_codes"], **common)
    return run_transfer(cfg)["report"]


def grid_cmd(a: dict) -> str:

    res = run_grid(GridConfig(dataset=a["dataset"], root=a["root"], out=a["out"], compute=not a.get("report_only"),
                              synthetic_scenario=a["synthetic_scenario"], keep_codes=a["keep_codes"], **common_args(a)))
    return json.dumps({"cells": res["cells"], "cells_reused": res["cells_reused"], "seconds": res["seconds"],
                       "outputs": res["outputs"]}, indent=1, default=str)


def run_command(a: dict) -> str:
    """Dispatch on the mode flags (build-medtok, throughput, synthetic-suite, transfer; else the grid)."""
    for flag, fn in (("build_medtok", build_medtok_cmd), ("throughput", throughput_cmd),
                     ("synthetic_suite", suite_cmd), ("transfer", transfer_cmd)):
        if a.get(flag):
            return fn(a)
    return grid_cmd(a)
