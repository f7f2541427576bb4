"""Intrinsic evaluation of MedTok checkpoints -> JSON + printed table.

    python scripts/eval_medtok.py runs/medtok [runs/medtok-textonly ...] --out runs/medtok/eval.json
    python scripts/eval_medtok.py --benchmark runs/medtok     # + tokenization speed, text-embedder speed
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medtok.evaluate import evaluate, format_table


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--vocab", default=None)
    ap.add_argument("--out", default=None, help="JSON path (default <first ckpt>/eval.json)")
    ap.add_argument("--pairs", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--benchmark", action="store_true", help="also time whole-vocabulary tokenization and the text embedder")
    ap.add_argument("--bench-texts", type=int, default=5000)
    a = ap.parse_args(argv)

    from medtok.tokenizer import MedTokTokenizer

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
