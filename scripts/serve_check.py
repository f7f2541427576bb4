"""Measure the served adapter: parity with HF, the "describe this code" task, throughput and
latency under concurrent clients, the gateway's own work, start-up. One command, one JSON.

    python scripts/serve_check.py runs/finetune_qa                      # everything (about 15-25 min on 2 cores)
    python scripts/serve_check.py runs/finetune_qa --parts parity --n-parity 50
    python scripts/serve_check.py runs/finetune_qa --parts load --clients 16 --requests 200 --max-tokens 64

Needs `make serve-env` (the vLLM venv). The HF references run in this process first, then the
service starts as `scripts/serve_gateway.py` would start it (gateway + vLLM on loopback), then the parts
run against it. Writes <out>/bench.json (see serve.bench for what each part measures).
"""

from __future__ import annotations

import argparse

from serve.bench import PARTS, BenchConfig, run_benchmark


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", nargs="?", default="runs/finetune_qa")
    p.add_argument("--out", default="runs/serve_bench")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--baseline", action="append", default=None, metavar="NAME=CKPT",
                   help="describe task: an adapter served without prefix (repeatable; default: <run>/lora)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of HF = cores vLLM is bound to")
    p.add_argument("--n-parity", type=int, default=50)
    p.add_argument("--parity-new-tokens", type=int, default=32)
    p.add_argument("--n-describe", type=int, default=150)
    p.add_argument("--clients", type=int, default=16, help="concurrent clients of the headline load run")
    p.add_argument("--sweep-clients", type=int, nargs="*", default=[32, 64], help="further load runs")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--min-seconds", type=float, default=60.0)
    p.add_argument("--hf-batch-sizes", type=int, nargs="+", default=[1, 4, 8, 16, 32, 64])
    p.add_argument("--n-gateway", type=int, default=200)
    p.add_argument("--linker-index", default=None)
    p.add_argument("--vocab-dir", default=None)
    a = p.parse_args(argv)
    run_benchmark(BenchConfig(checkpoint=a.checkpoint, out_dir=a.out, parts=a.parts,
                              describe_baselines=dict(x.split("=", 1) for x in a.baseline) if a.baseline else "auto",
                              threads=a.threads, n_parity=a.n_parity, parity_new_tokens=a.parity_new_tokens,
                              n_describe=a.n_describe, load_clients=a.clients, sweep_clients=a.sweep_clients, load_requests=a.requests,
                              load_max_tokens=a.max_tokens, load_min_seconds=a.min_seconds,
                              hf_batch_sizes=a.hf_batch_sizes, n_gateway=a.n_gateway, linker_index=a.linker_index,
                              vocab_dir=a.vocab_dir))


if __name__ == "__main__":
    main()
