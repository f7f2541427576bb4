"""Configuration of the QA service: what to serve, where, and the limits every request meets.

Two dataclasses on `JsonConfig`: `Limits` (per-request validation and admission control, the
numbers a client can rely on) and `ServeConfig` (checkpoint, backend, addresses, vLLM settings).
Validation that protects the deployment lives in `__post_init__`: a non-loopback bind address
without an API key is refused here, before anything starts.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

from medbase.jsonconfig import JsonConfig

BACKENDS = ("vllm", "hf")
EMBED_DTYPES = ("bfloat16", "float32", "float16")
API_KEY_ENV = "MEDTOK_SERVE_API_KEY"
# the vLLM release the serve environment pins (Makefile `serve-env`, constraints-vllm.txt)
VLLM_VERSION = "0.32.0"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost": addresses no other machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Limits(JsonConfig):
    """What one request may ask for, and how many may be served at once.

    max_question_chars   question / prompt / joined chat text, in characters
    max_option_chars     each option's text
    max_options          options per question (the letters A..J)
    max_codes            explicit codes per request; the linker's codes are capped by the adapter's max_codes
    max_code_chars       one code's spelling ("ICD10CM:E11.9" is 13)
    max_messages         chat messages per request
    max_tokens           cap on a request's `max_tokens` (larger values are refused, not clipped)
    default_max_tokens   used when a request gives none
    max_body_bytes       request body; larger bodies get 413 before they are parsed
    request_timeout_s    whole request (queueing included); then 504
    max_concurrency      requests at the backend at once (vLLM batches them; HF runs one at a time)
    max_queue            requests waiting for a slot; one more gets 429 instead of unbounded queueing
    queue_timeout_s      longest wait for a slot; then 503
    """

    max_question_chars: int = 4000
    max_option_chars: int = 500
    max_options: int = 10
    max_codes: int = 32
    max_code_chars: int = 40
    max_messages: int = 32
    max_tokens: int = 512
    default_max_tokens: int = 64
    max_body_bytes: int = 256 * 1024
    request_timeout_s: float = 120.0
    max_concurrency: int = 16
    max_queue: int = 64
    queue_timeout_s: float = 30.0

    def __post_init__(self):
        for name in ("max_question_chars", "max_option_chars", "max_codes", "max_code_chars", "max_messages",
                     "max_tokens", "default_max_tokens", "max_body_bytes", "max_concurrency"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"Limits.{name} must be >= 1, got {getattr(self, name)}")
        if not 2 <= self.max_options <= 10:
            raise ValueError(f"Limits.max_options must be in 2..10 (letters A..J), got {self.max_options}")
        if self.default_max_tokens > self.max_tokens:
            raise ValueError(f"default_max_tokens {self.default_max_tokens} > max_tokens {self.max_tokens}")
        if self.max_queue < 0 or not self.request_timeout_s > 0 or not self.queue_timeout_s > 0:
            raise ValueError("max_queue must be >= 0 and the timeouts positive")


@dataclass
class ServeConfig(JsonConfig):
    """One served adapter.

    checkpoint        a fine-tuning run dir (runs/finetune_qa) or one arm's adapter dir (…/lora_prefix)
    backend           "vllm" (a stock vLLM OpenAI server on loopback, own venv) or "hf" (in process)
    host, port        the gateway's address; any non-loopback host needs `api_key`
    api_key           required on every endpoint but /health when set (default: $MEDTOK_SERVE_API_KEY)
    embed_dtype       dtype of the prompt embeddings sent to the backend (bf16 halves the bytes;
                      float32 for exact parity with fp32 HF runs)
    max_model_len     context length; None = the base model's, capped at 2048 on CPU
    linker_index      a built linker index dir; None = the project's cached index (built on first use);
                      "none" = no linker (requests must give codes explicitly)
    vocab_dir         vocabulary for explicit codes; None = data/cache/vocab (or the MedTok checkpoint's)
    export_dir        where the served base/LoRA/code vectors are written; None = data/cache/serve/<key>
    served_name       the model name clients use (`model` field); None = the adapter dir's name
    vllm_python       interpreter of the vLLM venv (`make serve-env`)
    vllm_port         vLLM's loopback port; 0 = a free one
    vllm_kv_cache_gib, vllm_threads, tensor_parallel_size, vllm_extra_args   passed to vLLM
    device            HF backend device ("cpu", "cuda")
    torch_threads     HF backend and gateway torch threads (None = torch's default)
    """

    checkpoint: str = "runs/finetune_qa"
    backend: str = "vllm"
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    embed_dtype: str = "bfloat16"
    dtype: str | None = None
    max_model_len: int | None = None
    linker_index: str | None = None
    vocab_dir: str | None = None
    export_dir: str | None = None
    served_name: str | None = None
    vllm_python: str = ".venv-vllm/bin/python"
    vllm_port: int = 0
    vllm_kv_cache_gib: int = 1
    vllm_threads: str | None = None
    tensor_parallel_size: int = 1
    vllm_extra_args: list = field(default_factory=list)
    startup_timeout_s: float = 600.0
    device: str = "cpu"
    torch_threads: int | None = None
    log_level: str = "info"
    limits: Limits = field(default_factory=Limits)

    @classmethod
    def _normalize_dict(cls, d):
        if isinstance(d.get("limits"), dict):
            d["limits"] = Limits.from_dict(d["limits"])
        return d

    def __post_init__(self):
        if isinstance(self.limits, dict):
            self.limits = Limits.from_dict(self.limits)
        if self.api_key is None:
            self.api_key = os.environ.get(API_KEY_ENV) or None
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.embed_dtype not in EMBED_DTYPES:
            raise ValueError(f"embed_dtype must be one of {EMBED_DTYPES}, got {self.embed_dtype!r}")
        if self.dtype is not None and self.dtype not in EMBED_DTYPES:
            raise ValueError(f"dtype must be one of {EMBED_DTYPES} or None, got {self.dtype!r}")
        if not 0 <= int(self.port) < 65536 or not 0 <= int(self.vllm_port) < 65536:
            raise ValueError(f"ports must be in 0..65535, got {self.port} / {self.vllm_port}")
        if self.api_key is not None and len(self.api_key) < 16:
            raise ValueError("api_key must be at least 16 characters")
        if not is_loopback(self.host) and not self.api_key:
            raise ValueError(f"refusing to bind {self.host}: a non-loopback address needs an API key "
                             f"(--api-key or ${API_KEY_ENV}); the default 127.0.0.1 needs none")
        if self.max_model_len is not None and self.max_model_len < 16:
            raise ValueError(f"max_model_len must be >= 16, got {self.max_model_len}")
        if int(self.vllm_kv_cache_gib) != self.vllm_kv_cache_gib or self.vllm_kv_cache_gib < 1:
            raise ValueError(f"vllm_kv_cache_gib must be a whole number >= 1 (vLLM's VLLM_CPU_KVCACHE_SPACE), "
                             f"got {self.vllm_kv_cache_gib}")
        self.vllm_kv_cache_gib = int(self.vllm_kv_cache_gib)
        if self.tensor_parallel_size < 1:
            raise ValueError("tensor_parallel_size must be >= 1")
        self.vllm_extra_args = [str(a) for a in self.vllm_extra_args]

    def to_dict(self):
        d = super().to_dict()
        if d.get("api_key"):
            d["api_key"] = "***"  # never written to logs or manifests
        return d
