"""Description-retrieval probe of a MedTok checkpoint (medtok.probe): a ridge map from the
code's MedTok vectors to its MiniLM description embedding, fitted on training codes; for
each held-out code (never a training centre), accuracy of finding its own description
among --n candidate codes.

    python scripts/probe_medtok.py data/cache/medtok_icd10cm --n 1000
    python scripts/probe_medtok.py runs/medtok --n 1000 --systems ICD10CM --out runs/medtok/probe.json
    python scripts/probe_medtok.py CKPT --heldout-codes test_codes.txt   # a strictly-unseen MedTok's own list
    python scripts/probe_medtok.py CKPT --untrained      # baseline: a random MedTok of CKPT's configuration
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--n", type=int, default=1000, help="candidate codes per retrieval (chance = 1/n)")
    ap.add_argument("--alpha", type=float, default=1.0, help="ridge penalty")
    ap.add_argument("--max-train", type=int, default=20000, help="training codes for the ridge (0 = all)")
    ap.add_argument("--systems", nargs="+", default=["ICD10CM"], help="code systems probed ('all' = every one)")
    ap.add_argument("--heldout-codes", default=None, help="file with one held-out code id per line "
                    "(default: the checkpoint's own held-out codes)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--untrained", action="store_true",
                    help="probe a randomly initialised MedTok of the checkpoint's configuration instead")
    ap.add_argument("--out", default=None, help="JSON path (default <checkpoint>/probe.json)")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(argv)
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    from medbase.atomic import atomic_write_text
    from medtok.probe import ProbeConfig, probe_checkpoint

    cfg = ProbeConfig(n_candidates=a.n, alpha=a.alpha, max_train=a.max_train, seed=a.seed,
                      systems=None if a.systems == ["all"] else tuple(a.systems))
    held = Path(a.heldout_codes).read_text().split() if a.heldout_codes else None
    res = probe_checkpoint(a.checkpoint, cfg, heldout_codes=held, untrained=a.untrained)
    print(("untrained MedTok: " if a.untrained else "") + f"held-out description retrieval among {res['n_candidates']} codes ({res['n_queries']} queries, "
          f"{res['pools']} pools; ridge on {res['train_codes']} training codes): "
          + ", ".join(f"{k} {res[k]:.3f}" for k in (f"acc@{k}" for k in cfg.ks))
          + f"  (chance@1 {res['chance_at_1']:.4f}; on training codes acc@1 {res['train_acc@1']:.3f})")
    out = Path(a.out) if a.out else Path(a.checkpoint) / ("probe_untrained.json" if a.untrained else "probe.json")
    atomic_write_text(out, json.dumps(res, indent=1))
    print(f"wrote {out}")
    return res


if __name__ == "__main__":
    main()
