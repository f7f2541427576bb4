"""Serve a fine-tuned adapter as a code-aware QA service (gateway + vLLM, or in-process HF).

    python scripts/serve_gateway.py runs/finetune_qa                       # vLLM backend (needs `make serve-env`)
    python scripts/serve_gateway.py runs/finetune_qa/lora_prefix --backend hf --port 8001
    MEDTOK_SERVE_API_KEY=... python scripts/serve_gateway.py runs/finetune_qa --host 0.0.0.0   # non-loopback needs a key

Finds the base model, adapter, MedTok checkpoint, dtype and context length in the checkpoint,
starts vLLM on loopback (its own venv) and the gateway, waits until both are healthy, prints
the URL; Ctrl-C stops both. Then: `python scripts/ask.py --server URL "question" --options ...`.
"""

from __future__ import annotations

import argparse
import sys

from serve.bundle import BundleError
from serve.config import Limits, ServeConfig
from serve.launcher import LaunchError
from serve.logs import configure_logging
from serve.server import ServiceHandle


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", nargs="?", default="runs/finetune_qa",
                   help="fine-tuning run dir or adapter dir (default runs/finetune_qa)")
    p.add_argument("--backend", choices=["vllm", "hf"], default="vllm")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None, help="required for a non-loopback --host (or $MEDTOK_SERVE_API_KEY)")
    p.add_argument("--embed-dtype", choices=["bfloat16", "float32", "float16"], default="bfloat16",
                   help="dtype of the prompt embeddings sent to the backend")
    p.add_argument("--dtype", default=None, help="model dtype (default: the adapter's)")
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--linker-index", default=None, help="built linker index dir; 'none' = explicit codes only")
    p.add_argument("--vocab-dir", default=None)
    p.add_argument("--export-dir", default=None, help="served bundle dir (default data/cache/serve/<key>)")
    p.add_argument("--served-name", default=None)
    p.add_argument("--vllm-port", type=int, default=0)
    p.add_argument("--vllm-threads", default=None, help="VLLM_CPU_OMP_THREADS_BIND, e.g. 0-1")
    p.add_argument("--kv-cache-gib", type=int, default=1)
    p.add_argument("--tensor-parallel-size", type=int, default=1, help="GPUs for vLLM tensor parallelism")
    p.add_argument("--device", default="cpu", help="hf backend device")
    p.add_argument("--threads", type=int, default=None, help="torch threads of the gateway / hf backend")
    p.add_argument("--max-concurrency", type=int, default=16)
    p.add_argument("--max-queue", type=int, default=64)
    p.add_argument("--max-tokens", type=int, default=512, help="cap on a request's max_tokens")
    p.add_argument("--request-timeout", type=float, default=120.0)
    p.add_argument("--log-level", default="info")
    p.add_argument("--config", default=None, help="a ServeConfig JSON file (the flags above are then ignored)")
    a = p.parse_args(argv)
    configure_logging(a.log_level)
    try:
        if a.config:
            cfg = ServeConfig.load(a.config)
        else:
            limits = Limits(max_concurrency=a.max_concurrency, max_queue=a.max_queue, max_tokens=a.max_tokens,
                            request_timeout_s=a.request_timeout)
            cfg = ServeConfig(checkpoint=a.checkpoint, backend=a.backend, host=a.host, port=a.port, api_key=a.api_key,
                              embed_dtype=a.embed_dtype, dtype=a.dtype, max_model_len=a.max_model_len,
                              linker_index=a.linker_index, vocab_dir=a.vocab_dir, export_dir=a.export_dir,
                              served_name=a.served_name, vllm_port=a.vllm_port, vllm_threads=a.vllm_threads,
                              vllm_kv_cache_gib=a.kv_cache_gib, tensor_parallel_size=a.tensor_parallel_size,
                              device=a.device, torch_threads=a.threads, log_level=a.log_level, limits=limits)
        ServiceHandle(cfg).serve_forever()
    except (LaunchError, BundleError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
