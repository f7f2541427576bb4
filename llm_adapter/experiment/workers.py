"""Run the prefix experiment's grid on several processes at once: one shard of the cells each
(`run_experiment(..., shard=(i, n))`), so two workers use both cores of a 2-core machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_workers(cfg, workers: int, *, limit: int | None = None) -> int:
    """The grid on `workers` processes at once (one shard each, `cfg.threads` torch threads each),
    each logging to work_dir/worker<i>.log; returns the number of workers that failed. On 2
    cores: 2 workers x 1 thread."""
    work = Path(cfg.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    cfg_path = work / "experiment_config.json"
    cfg.save(cfg_path)
    env = {**os.environ, "OMP_NUM_THREADS": str(cfg.threads or 1)}
    procs = []
    for i in range(workers):
        code = ("from llm_adapter.experiment.grid import ExperimentConfig, run_experiment; "
                f"run_experiment(ExperimentConfig.load({str(cfg_path)!r}), limit={limit!r}, shard=({i}, {workers}))")
        log = open(work / f"worker{i}.log", "a")
        procs.append((subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT, env=env), log))
        print(f"worker {i}: log {work / f'worker{i}.log'}", flush=True)
    failed = 0
    for i, (proc, log) in enumerate(procs):
        rc = proc.wait()
        log.close()
        failed += rc != 0
        print(f"worker {i}: exit {rc}", flush=True)
    return failed


__all__ = ["run_workers"]
