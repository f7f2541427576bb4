"""Score a causal LM on a multiple-choice QA set; prints the accuracy table and writes JSON.

    python scripts/eval_qa.py --dataset meddx --split expert
    python scripts/eval_qa.py --model /models/Llama-3.1-8B-Instruct --device cuda --dtype bfloat16 --dataset meddx
    python scripts/eval_qa.py --dataset mc_file --data-path medqa_test.jsonl
    python scripts/eval_qa.py --dataset ontology --split test --size 300
    python scripts/eval_qa.py --table runs/eval/a.json runs/eval/b.json   # compare saved runs
    python scripts/eval_qa.py --merge runs/eval/meddx-all.json --table runs/eval/meddx-{basic,expert}-x.json
"""

from __future__ import annotations

import argparse

from qa.datasets import dataset_names
from qa.harness import DTYPES, MODES, EvalConfig, evaluate, table_of_saved


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="local HF model dir or hub id (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--dataset", default="meddx", help=f"one of {', '.join(dataset_names())}")
    p.add_argument("--data-path", default=None, help="dataset file (ontology: vocabulary dir)")
    p.add_argument("--split", default=None, help="split or difficulty, e.g. test, expert, basic")
    p.add_argument("--limit", type=int, default=None, help="first N questions only")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--mode", choices=MODES, default="loglik")
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--n-boot", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--system", default=None, help="name of this system in tables")
    p.add_argument("--output", default=None, help="results JSON (default runs/eval/<dataset>-<split>-<system>.json)")
    p.add_argument("--size", type=int, default=None, help="ontology: questions in the chosen split")
    p.add_argument("--difficulty", default=None, help="ontology: hard, easy or mixed")
    p.add_argument("--table", nargs="+", default=None, metavar="JSON",
                   help="only print the table of saved results (first = baseline for paired comparisons)")
    p.add_argument("--merge", default=None, metavar="JSON",
                   help="with --table: merge the runs (one system, disjoint questions) into this JSON first")
    p.add_argument("--backend", choices=["hf", "server"], default="hf",
                   help="hf: score in process; server: send the questions to a running gateway (scripts/serve_gateway.py)")
    p.add_argument("--server", default=None, help="with --backend server: the gateway URL, e.g. http://127.0.0.1:8000")
    a = p.parse_args(argv)
    if a.backend == "server" and not a.server:
        p.error("--backend server needs --server URL")
    if a.merge and not a.table:
        p.error("--merge needs --table FILES")
    if a.table:
        print(table_of_saved(a.table, merge_to=a.merge, system=a.system, n_boot=a.n_boot, seed=a.seed))
        return
    kwargs = {}
    if a.dataset == "ontology":
        if a.size is not None:
            kwargs["sizes"] = {a.split or "test": a.size}
        if a.difficulty:
            kwargs["difficulty"] = a.difficulty
    elif a.size is not None or a.difficulty is not None:
        p.error("--size/--difficulty apply to --dataset ontology only")
    cfg = EvalConfig(model=a.model, dataset=a.dataset, data_path=a.data_path, split=a.split, limit=a.limit,
                     batch_size=a.batch_size, mode=a.mode, dtype=a.dtype, device=a.device, n_boot=a.n_boot,
                     seed=a.seed, system=a.system, output=a.output, dataset_kwargs=kwargs)
    if a.backend == "server":
        from serve.client import evaluate_via_server   # the gateway client; not needed for in-process scoring

        evaluate_via_server(cfg, a.server)
        return
    evaluate(cfg)


if __name__ == "__main__":
    main()
