"""Train the MedTok tokenizer.

    python scripts/train_medtok.py --vocab data/cache/vocab --out runs/medtok
    python scripts/train_medtok.py --paper --out runs/medtok-paper      # N=12k, d=64, global batch 1024, 3000 steps
    python scripts/train_medtok.py --resume runs/medtok/checkpoint-100 --out runs/medtok
    python scripts/train_medtok.py --resume latest --out runs/medtok    # newest checkpoint that verifies
    python scripts/train_medtok.py --device cuda ...                   # default: CUDA when available
    accelerate launch --num_processes 4 scripts/train_medtok.py --paper ...   # 1024 / 4 codes per process

Flags: one per TrainConfig / MedTokConfig field (medtok.train_cli.add_training_arguments).
"""

from __future__ import annotations

import argparse

from medtok.train_cli import add_training_arguments, train_from_args


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    out = train_from_args(add_training_arguments(ap).parse_args(argv))
    print(f"checkpoint: {out}")


if __name__ == "__main__":
    main()
