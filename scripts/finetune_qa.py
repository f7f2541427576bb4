"""Fine-tune LoRA (+ code prefix) on multiple-choice QA and compare the two arms.

    python scripts/finetune_qa.py                                  # embedded default (CPU, SmolLM2-135M, ontology QA)
    accelerate launch scripts/finetune_qa.py --config my.json qa.steps=300 vector_source=minilm
    python scripts/finetune_qa.py --dataset meddx --data-path ../shared/data/qa/MedDDx.json

Overrides are `key.sub=value` on `llm_adapter.finetune_config.FinetuneConfig` (JSON values).
"""

from __future__ import annotations

import argparse
import json


def main(argv=None):
    from llm_adapter.finetune import finetune
    from llm_adapter.finetune_config import FinetuneConfig, apply_overrides

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="FinetuneConfig JSON (defaults: the embedded CPU run)")
    ap.add_argument("--dataset", choices=["ontology", "meddx"])
    ap.add_argument("--data-path", help="MedDDx JSON (meddx) or vocabulary dir (ontology)")
    ap.add_argument("--output-dir")
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
    finetune(cfg)


if __name__ == "__main__":
    main()
