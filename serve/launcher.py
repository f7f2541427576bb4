"""Start the service: bundle -> vLLM server (own venv, loopback) -> gateway; stop both cleanly.

    serve(ServeConfig(checkpoint="runs/finetune_qa"))     # what scripts/serve_gateway.py runs (blocks)
    with ServiceHandle(cfg) as h: httpx.post(h.url + "/v1/answer", ...)   # tests, benchmarks

Failures that a user can fix are `LaunchError`s with one actionable line: a port in use, a
missing adapter, a missing vLLM venv (`make serve-env`), a vLLM version other than the pinned one,
a base model vLLM cannot load (with the line of vLLM's log that says why).
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

from medbase.paths import PROJECT_ROOT
from serve.config import VLLM_VERSION, ServeConfig

VLLM_KEY_ENV = "MEDTOK_VLLM_API_KEY"
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # what vLLM's --max-lora-rank accepts


class LaunchError(RuntimeError):
    """Cannot start; the message says what to do."""


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def vllm_python(cfg: ServeConfig) -> Path:
    p = Path(cfg.vllm_python)
    return p if p.is_absolute() else PROJECT_ROOT / p


def installed_vllm_version(python: Path) -> str | None:
    """The vLLM version of a venv, read from its dist-info (no 6-second `import vllm`)."""
    for d in sorted((python.parent.parent / "lib").glob("python*/site-packages/vllm*.dist-info")):
        m = re.match(r"vllm(?:_cpu)?-([^-]+)\.dist-info", d.name)
        if m:
            return m.group(1)
    return None


def check_vllm_env(cfg: ServeConfig) -> Path:
    python = vllm_python(cfg)
    if not python.exists():
        raise LaunchError(f"the vLLM backend needs its own venv ({python} is missing): run `make serve-env` "
                          f"(about 2-3 minutes), or start with --backend hf")
    version = installed_vllm_version(python)
    if version != VLLM_VERSION:
        raise LaunchError(f"{python} has vLLM {version}, the service is pinned to {VLLM_VERSION}: "
                          f"rebuild it with `rm -rf .venv-vllm && make serve-env`")
    return python


def vllm_command(python: Path, bundle, cfg: ServeConfig, port: int, lora_name: str) -> list[str]:
    """The vLLM OpenAI server for `bundle`. LoRA layers only on the adapter's own target modules:
    vLLM's default also wraps `embed_tokens`, which breaks with prompt embeds (issue 51122)."""
    rank = next(r for r in LORA_RANKS if r >= bundle["lora_rank"])
    dtype = cfg.dtype or bundle["dtype"]
    cmd = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(bundle.base_dir),
           "--dtype", dtype, "--max-model-len", str(max_model_len(cfg, bundle)),
           "--host", "127.0.0.1", "--port", str(port), "--enable-prompt-embeds",
           "--enable-lora", "--max-loras", "1", "--max-lora-rank", str(rank),
           "--lora-modules", f"{lora_name}={bundle.lora_dir}",
           "--lora-target-modules", *bundle["lora_target_modules"],
           "--max-num-seqs", str(max(cfg.limits.max_concurrency, 1)), "--seed", "0",
           "--no-enable-prefix-caching", "--disable-uvicorn-access-log"]
    if cfg.tensor_parallel_size > 1:
        cmd += ["--tensor-parallel-size", str(cfg.tensor_parallel_size)]
    return cmd + list(cfg.vllm_extra_args)


def max_model_len(cfg: ServeConfig, bundle) -> int:
    return int(cfg.max_model_len or min(bundle["max_position_embeddings"], 2048))


def vllm_env(cfg: ServeConfig, bundle, api_key: str) -> dict:
    env = dict(os.environ)
    # what one prompt of the served context can take decoded (fp32 worst case), instead of 2 GiB
    env["VLLM_MAX_EMBED_DECODE_BYTES"] = str(max_model_len(cfg, bundle) * bundle["hidden_size"] * 4)
    env["VLLM_API_KEY"] = api_key  # only the gateway talks to vLLM, even among local users
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.vllm_kv_cache_gib))
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    env.setdefault("DO_NOT_TRACK", "1")
    if cfg.vllm_threads:
        env["VLLM_CPU_OMP_THREADS_BIND"] = cfg.vllm_threads
    return env


_ERROR_LINE = re.compile(r"(Error\b|Error:|error,|not supported|Unsupported|cannot|No such file)")


def explain_vllm_failure(log_path: Path, base: str) -> str:
    """One line from vLLM's log: the last error lines (pydantic puts the reason after its header)."""
    lines = log_path.read_text(errors="replace").splitlines() if log_path.exists() else []
    errors = [ln.strip() for ln in lines if _ERROR_LINE.search(ln) and not ln.lstrip().startswith("File ")]
    why = " | ".join(dict.fromkeys(errors[-2:]))[:400] if errors else (lines[-1][:300] if lines else "no output")
    if re.search(r"architecture|not supported|Unsupported", " ".join(errors[-5:])):
        return f"vLLM {VLLM_VERSION} cannot load the base model {base}: {why} (log: {log_path})"
    return f"vLLM failed to start for {base}: {why} (log: {log_path})"


class VLLMServer:
    """The vLLM OpenAI server as a child process in its own process group (so Ctrl-C on the
    gateway's terminal reaches the gateway only, which then stops vLLM in order)."""

    def __init__(self, bundle, cfg: ServeConfig, lora_name: str, log_dir: Path):
        self.bundle, self.cfg, self.lora_name = bundle, cfg, lora_name
        self.python = check_vllm_env(cfg)
        self.port = cfg.vllm_port or free_port()
        if port_in_use("127.0.0.1", self.port):
            raise LaunchError(f"vLLM port {self.port} on 127.0.0.1 is in use: pass another --vllm-port (or 0)")
        self.url = f"http://127.0.0.1:{self.port}"
        # a fresh key per start unless the operator fixes one (tests that talk to vLLM directly)
        self.api_key = os.environ.get(VLLM_KEY_ENV) or secrets.token_urlsafe(24)
        self.log_path = Path(log_dir) / f"vllm-{self.port}.log"
        self.proc: subprocess.Popen | None = None
        self.startup_s: float | None = None
        self.version: str | None = None

    def start(self) -> "VLLMServer":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = vllm_command(self.python, self.bundle, self.cfg, self.port, self.lora_name)
        with open(self.log_path, "w") as log:
            log.write(" ".join(cmd) + "\n")
            log.flush()
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(PROJECT_ROOT),
                                         env=vllm_env(self.cfg, self.bundle, self.api_key), start_new_session=True)
        return self

    def wait_ready(self, timeout_s: float) -> float:
        t0 = time.perf_counter()
        headers = {"Authorization": f"Bearer {self.api_key}"}
        while time.perf_counter() - t0 < timeout_s:
            if self.proc.poll() is not None:
                raise LaunchError(explain_vllm_failure(self.log_path, self.bundle["base_model"]))
            try:
                r = httpx.get(self.url + "/v1/models", headers=headers, timeout=2.0)
                if r.status_code == 200 and any(m["id"] == self.lora_name for m in r.json()["data"]):
                    version = httpx.get(self.url + "/version", timeout=2.0).json().get("version")
                    self.version = version
                    if version != VLLM_VERSION:
                        raise LaunchError(f"vLLM reports version {version}, pinned {VLLM_VERSION}")
                    self.startup_s = time.perf_counter() - t0
                    return self.startup_s
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(0.5)
        self.stop()
        raise LaunchError(f"vLLM not ready after {timeout_s:g} s (log: {self.log_path})")

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.proc.pid, sig)  # the group: vLLM's engine-core child goes too
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue
