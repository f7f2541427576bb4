"""The prefix experiment (issue 13): arm x setting x seed, resumable cell by cell.

    python scripts/prefix_experiment.py --threads 1                  # the whole grid (hours on 2 cores)
    python scripts/prefix_experiment.py --arms no_prefix text_baseline prefix_medtok --seeds 0 --settings today
    python scripts/prefix_experiment.py --summarize                  # results/prefix_experiment/SUMMARY.md

Each finished cell writes results/prefix_experiment/<arm>__<setting>__seed<N>.json; started
again, the runner skips those (same config hash) and a killed cell resumes from its
checkpoints under runs/prefix_experiment/<cell>/. Overrides `key.sub=value` go to the
fine-tuning job's FinetuneConfig (e.g. `scorings=["option"]`).
"""

from __future__ import annotations

import argparse

from llm_adapter.experiment import ARMS, SETTINGS, ExperimentConfig, run_experiment
from llm_adapter.experiment_report import summarize
from llm_adapter.finetune_config import FinetuneConfig, apply_overrides


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="ExperimentConfig JSON")
    ap.add_argument("--arms", nargs="+", choices=ARMS)
    ap.add_argument("--settings", nargs="+", choices=SETTINGS)
    ap.add_argument("--seeds", nargs="+", type=int)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--medtok-steps", type=int)
    ap.add_argument("--limit", type=int, help="stop after this many cells")
    ap.add_argument("--summarize", action="store_true", help="only write the summary of the finished cells")
    ap.add_argument("overrides", nargs="*", help="FinetuneConfig key.sub=value")
    a = ap.parse_args(argv)
    d = ExperimentConfig.load(a.config).to_dict() if a.config else ExperimentConfig().to_dict()
    for key, val in (("arms", a.arms), ("settings", a.settings), ("seeds", a.seeds), ("threads", a.threads),
                     ("medtok_steps", a.medtok_steps)):
        if val is not None:
            d[key] = val
    if a.overrides:
        ft = {**FinetuneConfig().to_dict(), **d.get("finetune", {})}
        ft = apply_overrides(ft, a.overrides)
        d["finetune"] = {k: v for k, v in ft.items() if v != FinetuneConfig().to_dict().get(k)}
    cfg = ExperimentConfig.from_dict(d)
    if not a.summarize:
        run_experiment(cfg, limit=a.limit)
    print(summarize(cfg))


if __name__ == "__main__":
    main()
