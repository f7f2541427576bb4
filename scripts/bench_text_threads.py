"""Text embeddings/s with 1 and 2 intra-op threads, idle and beside one competing CPU-bound process,
for OpenMP's default (spinning) threads, OMP_WAIT_POLICY=PASSIVE and threads chosen from the free
cores (`TextEmbedder(threads="free")`), each in a fresh process (issue 21). Minutes; run by hand:

    python scripts/bench_text_threads.py --n-texts 3000 --out runs/bench/text_threads.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-texts", type=int, default=3000)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--competitors", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--policies", nargs="+", default=["active", "passive", "free"])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--vocab", default=None)
    ap.add_argument("--out", default="runs/bench/text_threads.json")
    a = ap.parse_args(argv)

    import numpy as np  # after argparse: --help stays fast

    from medtok.loading import load_vocabulary  # loads torch: after argparse too
    from medtok.model.text_encoder import benchmark_threads_under_load

    vocab, _ = load_vocabulary(a.vocab)
    desc = vocab.codes["description"].fillna("").astype(str).to_numpy()
    pick = np.random.default_rng(0).choice(len(desc), min(a.n_texts, len(desc)), replace=False)
    rows = benchmark_threads_under_load([desc[i] for i in pick], a.threads, a.competitors, a.policies,
                                        repeats=a.repeats)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rows, indent=1) + "\n")
    for r in rows:
        print(f"{r['policy']:>8} threads={r['threads']} competitors={r['competitors']}: "
              f"{r.get('texts_per_s', float('nan')):8.1f} texts/s {r.get('error', '')[:200]}")
    print(f"-> {a.out}")


if __name__ == "__main__":
    main()
