"""Intrinsic evaluation of MedTok checkpoints -> JSON + printed table.

    python scripts/eval_medtok.py runs/medtok [runs/medtok-textonly ...] --out runs/medtok/eval.json
    python scripts/eval_medtok.py --benchmark runs/medtok     # + tokenization speed, text-embedder speed
    python scripts/eval_medtok.py --ablations runs/ablations --steps 150 --batch-size 256
        # trains + evaluates full / text-only / graph-only / N=3000 with the same budget
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medtok.evaluate import evaluate, format_table


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
    ap.add_argument("--benchmark", action="store_true", help="also time whole-vocabulary tokenization and the text embedder")
    ap.add_argument("--bench-texts", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads; 1 is much faster on a machine shared with other jobs")
    a = ap.parse_args(argv)
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)

    from medtok.tokenizer import MedTokTokenizer

    if a.ablations:
        from medtok.evaluate import run_ablations
        from medtok.model.config import MedTokConfig
        from medtok.train import TrainConfig

        tcfg = TrainConfig(vocab_dir=a.vocab, steps=a.steps, batch_size=a.batch_size, systems=a.systems,
                           save_every=10 ** 9)
        res = run_ablations(tcfg, MedTokConfig(), a.ablations, codebook_sizes=a.codebook_sizes, n_pairs=a.pairs)
        out = Path(a.out) if a.out else Path(a.ablations) / "ablations.json"
        out.write_text(json.dumps(res, indent=1))
        print(format_table(res))
        print(f"wrote {out}")
        return
    if not a.checkpoints:
        ap.error("give checkpoints or --ablations OUT_ROOT")
    if a.export:
        tok = MedTokTokenizer.from_pretrained(a.checkpoints[0], a.vocab)
        print(f"wrote {tok.export(a.codes, a.export)}")
        return
    results = {}
    for ck in a.checkpoints:
        tok = MedTokTokenizer.from_pretrained(ck, a.vocab)
        r = evaluate(tok, n_pairs=a.pairs, seed=a.seed)
        r["checkpoint"], r["config"] = ck, tok.model.config.to_dict()
        if a.benchmark:
            r["tokenize_benchmark"] = [tok.benchmark_encode_all() for _ in range(2)][-1]
            print("tokenize:", r["tokenize_benchmark"])
        results[Path(ck).name] = r
    if a.benchmark:
        from medtok.model.text_encoder import benchmark_text_embedder

        texts = list(tok.vocab.codes["description"].sample(a.bench_texts, random_state=a.seed))
        results["_text_embedder_benchmark"] = benchmark_text_embedder(texts, tok.model.config.text_encoder)
        print("text embedder:", results["_text_embedder_benchmark"])
    out = Path(a.out) if a.out else Path(a.checkpoints[0]) / "eval.json"
    out.write_text(json.dumps(results, indent=1))
    print(format_table({k: v for k, v in results.items() if not k.startswith("_")}))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
