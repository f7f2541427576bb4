"""Train the MedTok tokenizer.

    python scripts/train_medtok.py --vocab data/cache/vocab --out runs/medtok
    python scripts/train_medtok.py --paper --out runs/medtok-paper      # N=12k, d=64, batch 1024, 3000 steps
    python scripts/train_medtok.py --resume runs/medtok/checkpoint-100 --out runs/medtok
    accelerate launch --num_processes 2 scripts/train_medtok.py ...      # batch size is per process
"""

from __future__ import annotations

import argparse
from dataclasses import fields

from medtok.model.config import MedTokConfig
from medtok.train import TrainConfig, train

PAPER = dict(codebook_size=12000, embed_dim=64, batch_size=1024, steps=3000)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", dest="vocab_dir", default=None, help="vocabulary dir (default data/cache/vocab)")
    ap.add_argument("--out", dest="out_dir", default="runs/medtok")
    ap.add_argument("--resume", default=None, help="checkpoint dir to resume from (model config is taken from it)")
    ap.add_argument("--paper", action="store_true", help="paper settings: " + str(PAPER))
    ap.add_argument("--no-progress", action="store_true")
    for f in fields(TrainConfig):
        if f.name not in ("vocab_dir", "out_dir", "systems"):
            ap.add_argument(f"--{f.name.replace('_', '-')}", dest=f"t_{f.name}", type=type(f.default), default=None)
    for f in fields(MedTokConfig):
        if f.name in ("extra", "region_fractions"):
            continue
        typ = str if f.name == "text_encoder" else (lambda s: s.lower() in ("1", "true", "yes")) if isinstance(f.default, bool) else type(f.default)
        ap.add_argument(f"--{f.name.replace('_', '-')}", dest=f"m_{f.name}", type=typ, default=None)
    ap.add_argument("--region-fractions", type=float, nargs=3, default=None)
    ap.add_argument("--systems", nargs="+", default=None, help="restrict to these code systems, e.g. ICD10CM ICD9CM")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads; 1 is much faster on a machine shared with other jobs")
    a = ap.parse_args(argv)
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    base = dict(PAPER) if a.paper else {}
    if a.resume:  # continue with the interrupted run's settings unless overridden here
        import json
        from pathlib import Path

        base = json.loads((Path(a.resume) / "train_config.json").read_text())
        base.pop("out_dir", None)
        a.vocab_dir = a.vocab_dir or base.pop("vocab_dir", None)
        a.systems = a.systems or base.pop("systems", None)
    tkw = {f.name: base.get(f.name) for f in fields(TrainConfig)
           if base.get(f.name) is not None and f.name not in ("vocab_dir", "out_dir", "systems")}
    mkw = {f.name: base.get(f.name) for f in fields(MedTokConfig) if base.get(f.name) is not None}
    tkw.update({k[2:]: v for k, v in vars(a).items() if k.startswith("t_") and v is not None})
    mkw.update({k[2:]: v for k, v in vars(a).items() if k.startswith("m_") and v is not None})
    if a.region_fractions:
        mkw["region_fractions"] = tuple(a.region_fractions)
    tcfg = TrainConfig(vocab_dir=a.vocab_dir, out_dir=a.out_dir, systems=a.systems, **tkw)
    mcfg = None if a.resume else MedTokConfig(**mkw)
    out = train(tcfg, mcfg, resume_from=a.resume, progress=not a.no_progress)
    print(f"checkpoint: {out}")


if __name__ == "__main__":
    main()
