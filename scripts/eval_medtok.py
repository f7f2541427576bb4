"""Intrinsic evaluation of MedTok checkpoints -> JSON + printed table.

    python scripts/eval_medtok.py runs/medtok [runs/medtok-textonly ...] --out runs/medtok/eval.json
    python scripts/eval_medtok.py --benchmark runs/medtok     # + tokenization speed, text-embedder speed
    python scripts/eval_medtok.py --ablations runs/ablations --steps 150 --batch-size 256
        # trains + evaluates full / text-only / graph-only / no dead-entry restarts / no GEM edges / N=3000
        # with the same budget (see also scripts/medtok_intrinsic.py: the table with baselines)
    python scripts/eval_medtok.py --embedder-benchmark --bench-texts 5000 --threads 1 [--bench-repeats 3]
        # our text embedder vs SentenceTransformer.encode (same bf16 autocast, and fp32), no checkpoint
"""

from __future__ import annotations

import argparse
import json

import torch

from medtok.ablations import ablation_study
from medtok.evaluate import benchmark_description_embedder, evaluate_checkpoints, format_table
from medtok.loading import load_vocabulary
from medtok.tokenizer import export_codes


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="*")
    ap.add_argument("--ablations", default=None, metavar="OUT_ROOT", help="train + evaluate the ablation variants here")
    ap.add_argument("--steps", type=int, default=150, help="ablation training steps (same for every variant)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--codebook-sizes", type=int, nargs="+", default=[3000])
    ap.add_argument("--systems", nargs="+", default=None)
    ap.add_argument("--export", default=None, metavar="PATH",
                    help="write token ids/weights/vectors of --codes (default: all codes) of the first checkpoint "
                         "to PATH (.parquet or .npz) and exit")
    ap.add_argument("--codes", nargs="+", default=None)
    ap.add_argument("--vocab", default=None)
    ap.add_argument("--out", default=None, help="JSON path (default <first ckpt>/eval.json)")
    ap.add_argument("--pairs", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None, help="where the tokenizer runs (default CPU), e.g. cuda")
    ap.add_argument("--benchmark", action="store_true", help="also time whole-vocabulary tokenization and the text embedder")
    ap.add_argument("--embedder-benchmark", action="store_true",
                    help="only time the text embedder against SentenceTransformer.encode (no checkpoint needed)")
    ap.add_argument("--bench-texts", type=int, default=5000)
    ap.add_argument("--bench-repeats", type=int, default=1,
                    help="embedder benchmark: run the variants round-robin this many times, keep each one's best")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads; 1 is much faster on a machine shared with other jobs")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)

    if a.embedder_benchmark:
        vocab, _ = load_vocabulary(a.vocab, a.systems)
        res = benchmark_description_embedder(vocab, a.bench_texts, a.seed, repeats=a.bench_repeats)
        print(json.dumps(res, indent=1))
        if a.out:
            with open(a.out, "w") as f:
                json.dump(res, f, indent=1)
        return
    if a.ablations:
        res, out = ablation_study(a.ablations, a.steps, a.batch_size, a.codebook_sizes, a.systems, a.vocab, a.pairs,
                                  a.out)
        print(format_table(res))
        print(f"wrote {out}")
        return
    if not a.checkpoints:
        ap.error("give checkpoints, --ablations OUT_ROOT or --embedder-benchmark")
    if a.export:
        print(f"wrote {export_codes(a.checkpoints[0], a.export, a.codes, a.vocab, a.device)}")
        return
    results, out = evaluate_checkpoints(a.checkpoints, a.vocab, a.pairs, a.seed, a.benchmark, a.bench_texts, a.out,
                                        a.device)
    for name, r in results.items():
        if "tokenize_benchmark" in r:
            print(f"tokenize {name}:", r["tokenize_benchmark"])
    if "_text_embedder_benchmark" in results:
        print("text embedder:", results["_text_embedder_benchmark"])
    print(format_table({k: v for k, v in results.items() if not k.startswith("_")}))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
