"""The intrinsic MedTok table with baselines (medtok.intrinsic): trained MedTok, the same
MedTok untrained, text-embedding kNN baselines, no dead-entry restarts, no GEM edges, another
codebook size; overlap ratios with chance-corrected kappa and AUC beside them.

    python scripts/medtok_intrinsic.py --out runs/medtok_intrinsic --threads 1
    python scripts/medtok_intrinsic.py --systems ICD10CM ICD9CM         # two systems only (GEM pairs need both)
    python scripts/medtok_intrinsic.py --rows medtok knn_text           # some rows only

Rows already in OUT/results/ are reused (delete a file to recompute it); trained checkpoints too.
"""

from __future__ import annotations

import argparse
import logging


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/medtok_intrinsic")
    ap.add_argument("--vocab", default=None)
    ap.add_argument("--systems", nargs="+", default=["all"], help="code systems (default 'all': every one)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--codebook-sizes", type=int, nargs="*", default=[3000])
    ap.add_argument("--rows", nargs="+", default=None)
    ap.add_argument("--pairs", type=int, default=20000)
    ap.add_argument("--kmeans-iters", type=int, default=20)
    ap.add_argument("--kmeans-sample", type=int, default=50000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    from medtok.intrinsic import IntrinsicConfig, format_intrinsic_table, run_intrinsic

    cfg = IntrinsicConfig(out_root=a.out, vocab_dir=a.vocab, systems=None if a.systems == ["all"] else a.systems,
                          steps=a.steps, batch_size=a.batch_size, seed=a.seed, codebook_sizes=a.codebook_sizes,
                          rows=a.rows, n_pairs=a.pairs, kmeans_iters=a.kmeans_iters, kmeans_sample=a.kmeans_sample)
    results, out = run_intrinsic(cfg, progress=not a.no_progress)
    print(format_intrinsic_table(results))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
