"""Fine-tune LoRA (+ code prefix) on multiple-choice QA and compare the two arms.

    python scripts/finetune_qa.py                                  # embedded default (CPU, SmolLM2-135M, ontology QA)
    accelerate launch scripts/finetune_qa.py --config my.json qa.steps=300 vector_source=minilm
    python scripts/finetune_qa.py --dataset meddx --data-path ../shared/data/qa/MedDDx.json
    python scripts/finetune_qa.py --seeds 0 1 2                    # one run per seed, then mean ± sd

The job reads its vocabulary and MedTok checkpoint and never makes them: `make demo` (or
`python scripts/demo.py --prepare-only`) prepares the default ones; a missing one is an error
naming the command that makes it. Overrides are `key.sub=value` on
`llm_adapter.finetune_config.FinetuneConfig` (JSON values; unknown keys are rejected).
"""

from __future__ import annotations

import argparse
import sys

from llm_adapter.finetune import finetune, finetune_seeds
from llm_adapter.finetune_config import FinetuneConfig, apply_overrides


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="FinetuneConfig JSON (defaults: the embedded CPU run)")
    ap.add_argument("--dataset", choices=["ontology", "meddx"])
    ap.add_argument("--data-path", help="MedDDx JSON (meddx) or vocabulary dir (ontology)")
    ap.add_argument("--output-dir")
    ap.add_argument("--seeds", type=int, nargs="+", help="run once per seed (output-dir/seed-N) and report mean ± sd")
    ap.add_argument("overrides", nargs="*", help="key.sub=value")
    args = ap.parse_args(argv)
    d = FinetuneConfig.load(args.config).to_dict() if args.config else FinetuneConfig().to_dict()
    if args.dataset:
        d["dataset"] = args.dataset
        if args.dataset == "meddx":  # its own splits unless given
            d["train_split"], d["eval_splits"] = None, None
    if args.data_path:
        d["data_path"] = args.data_path
    if args.output_dir:
        d["output_dir"] = args.output_dir
    cfg = FinetuneConfig.from_dict(apply_overrides(d, args.overrides))
    try:
        if args.seeds:
            finetune_seeds(cfg, args.seeds)
        else:
            finetune(cfg)
    except FileNotFoundError as e:  # a missing prerequisite: one line with the command that makes it
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
