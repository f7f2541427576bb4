"""The prefix experiment (issue 13): arm x setting x seed, resumable cell by cell.

    python scripts/prefix_experiment.py --workers 2 --threads 1      # the whole grid on 2 cores (hours)
    python scripts/prefix_experiment.py --arms no_prefix text_baseline prefix_medtok --seeds 0 --settings today
    python scripts/prefix_experiment.py --summarize                  # results/prefix_experiment/SUMMARY.md
    python scripts/prefix_experiment.py --task relational --threads 1  # per-type relational grid
    python scripts/prefix_experiment.py --task relational_kg --threads 1  # knowledge-graph types

Each finished cell writes results/prefix_experiment[_relational]/<arm>__<setting>__seed<N>.json; started
again, the runner skips those (same config hash) and a killed cell resumes from its
checkpoints under runs/prefix_experiment/<cell>/. Overrides `key.sub=value` go to the
fine-tuning job's FinetuneConfig (e.g. `scorings=["option"]`).
"""

from __future__ import annotations

import argparse

from llm_adapter.experiment.grid import ARMS, SETTINGS, TASKS, ExperimentConfig, run_experiment
from llm_adapter.experiment.summary import summarize
from llm_adapter.experiment.workers import run_workers
from llm_adapter.finetune_config import FinetuneConfig, apply_overrides


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="ExperimentConfig JSON")
    ap.add_argument("--task", choices=TASKS, help="ontology (default), relational or relational_kg (knowledge-graph) questions")
    ap.add_argument("--types", nargs="+", help="relational question types (default: the task's: the code-graph or the KG types)")
    ap.add_argument("--arms", nargs="+", choices=ARMS)
    ap.add_argument("--settings", nargs="+", choices=SETTINGS)
    ap.add_argument("--seeds", nargs="+", type=int)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--medtok-steps", type=int)
    ap.add_argument("--limit", type=int, help="stop after this many cells (per worker)")
    ap.add_argument("--workers", type=int, default=1, help="processes running disjoint cells at once (2 on 2 cores)")
    ap.add_argument("--shard", nargs=2, type=int, metavar=("I", "N"), help="run only shard I of N (what a worker runs)")
    ap.add_argument("--summarize", action="store_true", help="only write the summary of the finished cells")
    ap.add_argument("overrides", nargs="*", help="FinetuneConfig key.sub=value")
    a = ap.parse_args(argv)
    # a task's defaults (settings, MedTok systems, result dirs) are resolved when the config is made
    d = ExperimentConfig.load(a.config).to_dict() if a.config else ExperimentConfig(task=a.task or "ontology").to_dict()
    if a.types:
        d["relational"] = {**d.get("relational", {}), "types": a.types}
    for key, val in (("task", a.task), ("arms", a.arms), ("settings", a.settings), ("seeds", a.seeds), ("threads", a.threads),
                     ("medtok_steps", a.medtok_steps)):
        if val is not None:
            d[key] = val
    if a.overrides:
        ft = {**FinetuneConfig().to_dict(), **d.get("finetune", {})}
        ft = apply_overrides(ft, a.overrides)
        d["finetune"] = {k: v for k, v in ft.items() if v != FinetuneConfig().to_dict().get(k)}
    cfg = ExperimentConfig.from_dict(d)
    if not a.summarize:
        if a.workers > 1:
            if run_workers(cfg, a.workers, limit=a.limit):
                raise SystemExit("a worker failed: see its log")
        else:
            run_experiment(cfg, limit=a.limit, shard=tuple(a.shard) if a.shard else None)
    print(summarize(cfg))


if __name__ == "__main__":
    main()
