"""Run the whole service: bundle, backend (vLLM child process or in-process HF), gateway.

    serve(cfg)                       blocking; Ctrl-C (SIGINT) or SIGTERM stops gateway then vLLM
    with ServiceHandle(cfg) as h:    the same in a background thread (tests, benchmarks)
        httpx.post(h.url + "/v1/answer", json={...})
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path

import httpx

from medbase.paths import default_vocab_dir
from medtok.codes.vocabulary import Vocabulary
from serve.bundle import prepare_bundle
from serve.codes import CodeResolver
from serve.config import ServeConfig
from serve.embeds import PromptBuilder
from serve.gateway import create_app
from serve.launcher import LaunchError, VLLMServer, free_port, port_in_use
from serve.metrics import GatewayMetrics
from serve.service import QAService

log = logging.getLogger("medtok.serve")


def _say(msg: str) -> None:
    print(msg, flush=True)


def load_serving_vocabulary(cfg: ServeConfig):

    vdir = Path(cfg.vocab_dir) if cfg.vocab_dir else default_vocab_dir()
    if not (vdir / "codes.parquet").exists():
        raise LaunchError(f"no vocabulary at {vdir}: build it with `python scripts/build_vocab.py` (or pass --vocab-dir)")
    return Vocabulary.load(vdir)


def load_linker(cfg: ServeConfig, say=_say):
    from qa.linker import CodeLinker  # spaCy is slow to import: only the linker path needs it
    if cfg.linker_index == "none":
        return None

    if cfg.linker_index:
        return CodeLinker.from_pretrained(cfg.linker_index)
    say("loading the code linker (a first run builds its index: several minutes)")
    return CodeLinker.build(verbose=False)


class ServiceHandle:
    """Starts everything on `start()`, stops everything on `stop()`; `.url` is the gateway.

    vocab, linker, bundle_kwargs   ready objects for tests (toy vocabulary, small linker index,
                                   the vector source / base model given to `prepare_bundle`)"""

    def __init__(self, cfg: ServeConfig, *, vocab=None, linker=None, bundle_kwargs: dict | None = None,
                 say=_say):
        self.cfg, self.say = cfg, say
        self._vocab, self._linker, self._bundle_kwargs = vocab, linker, bundle_kwargs or {}
        self.vllm: VLLMServer | None = None
        self.server = None
        self.thread: threading.Thread | None = None
        self.timings: dict[str, float] = {}
        self.url = ""

    # ---- assembly ------------------------------------------------------------------------------
    def build(self):
        """bundle -> (vLLM started) -> vocabulary, linker, prompt builder -> backend -> app."""

        cfg, t0 = self.cfg, time.perf_counter()
        if cfg.torch_threads:
            import torch

            torch.set_num_threads(cfg.torch_threads)
        self.port = cfg.port or free_port(cfg.host)
        if port_in_use(cfg.host, self.port):
            raise LaunchError(f"port {self.port} on {cfg.host} is in use (another server?): pass --port N")
        self.bundle = bundle = prepare_bundle(cfg.checkpoint, cfg.export_dir, log=self.say, **self._bundle_kwargs)
        self.timings["bundle_s"] = time.perf_counter() - t0
        name = cfg.served_name or bundle.adapter_dir.name
        log_dir = Path(bundle.directory) / "logs"
        if cfg.backend == "vllm":  # boots while the gateway loads its own parts
            self.vllm = VLLMServer(bundle, cfg, name, log_dir).start()
            self.say(f"starting vLLM on 127.0.0.1:{self.vllm.port} (log: {self.vllm.log_path})")
        try:
            t1 = time.perf_counter()
            vocab = self._vocab if self._vocab is not None else load_serving_vocabulary(cfg)
            linker = self._linker if self._linker is not None else load_linker(cfg, self.say)
            builder = PromptBuilder(bundle, vocab, cfg.embed_dtype)
            self.timings["gateway_load_s"] = time.perf_counter() - t1
            if cfg.backend == "vllm":
                from serve.backends.vllm_server import VLLMServerBackend  # only the configured backend

                self.timings["vllm_ready_s"] = self.vllm.wait_ready(cfg.startup_timeout_s)
                backend = VLLMServerBackend(self.vllm.url, name, timeout_s=cfg.limits.request_timeout_s,
                                            max_connections=cfg.limits.max_concurrency + 8,
                                            api_key=self.vllm.api_key,
                                            server_info={"vllm_port": self.vllm.port, "vllm_pid": self.vllm.proc.pid,
                                                         "vllm_version": self.vllm.version})
            else:
                from serve.backends.hf import HFBackend  # transformers + peft: slow, only for this backend

                backend = HFBackend(bundle, builder, cfg.device)
            resolver = CodeResolver(vocab, linker, cfg.limits.max_code_chars)
            self.service = QAService(cfg, bundle, builder, resolver, backend, GatewayMetrics())
            self.app = create_app(self.service)
        except BaseException:
            self.stop()
            raise
        return self.app

    def _uvicorn(self):
        import uvicorn

        config = uvicorn.Config(self.app, host=self.cfg.host, port=self.port, log_config=None, access_log=False,
                                timeout_graceful_shutdown=5, log_level=self.cfg.log_level, lifespan="off")
        return uvicorn.Server(config)

    # ---- background (tests, benchmarks) ---------------------------------------------------------
    def start(self, timeout_s: float = 60.0) -> "ServiceHandle":
        t0 = time.perf_counter()
        self.build()
        self.server = self._uvicorn()
        self.server.install_signal_handlers = lambda: None  # not the main thread
        self.thread = threading.Thread(target=self.server.run, name="gateway", daemon=True)
        self.thread.start()
        self.url = f"http://{self.cfg.host}:{self.port}"
        self._wait_gateway(timeout_s)
        self.timings["startup_s"] = time.perf_counter() - t0
        return self

    def _wait_gateway(self, timeout_s: float) -> None:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout_s:
            try:
                if httpx.get(self.url + "/health", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.thread is not None and not self.thread.is_alive():
                break
            time.sleep(0.1)
        self.stop()
        raise LaunchError(f"gateway not healthy at {self.url} after {timeout_s:g} s")

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
            if self.thread is not None:
                self.thread.join(timeout=15)
            self.server = None
        if self.vllm is not None:
            self.vllm.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- foreground (scripts/serve_gateway.py) ------------------------------------------------------------
    def serve_forever(self) -> None:
        """Blocks; uvicorn turns SIGINT/SIGTERM into a graceful stop, then vLLM is stopped. If vLLM
        dies meanwhile the gateway stops too (a gateway without its backend only answers 503)."""
        t0 = time.perf_counter()
        self.build()
        self.server = self._uvicorn()
        self.url = f"http://{self.cfg.host}:{self.port}"

        async def watch():
            while not self.server.started:
                await asyncio.sleep(0.1)
            self.timings["startup_s"] = time.perf_counter() - t0
            self.say(f"serving {self.service.served_name!r} ({self.cfg.backend} backend) at {self.url} "
                     f"- ready in {self.timings['startup_s']:.1f} s; Ctrl-C stops "
                     f"{'gateway and vLLM' if self.vllm else 'the gateway'}")
            while not self.server.should_exit:
                if self.vllm is not None and self.vllm.proc.poll() is not None:
                    self.say(f"vLLM exited with code {self.vllm.proc.returncode} (log: {self.vllm.log_path}); stopping")
                    self.server.should_exit = True
                await asyncio.sleep(1.0)

        async def main():
            task = asyncio.create_task(watch())
            try:
                await self.server.serve()
            finally:
                task.cancel()

        try:
            asyncio.run(main())
        except KeyboardInterrupt:  # uvicorn re-raises the SIGINT it handled, once it has shut down
            pass
        finally:
            if self.vllm is not None:
                self.say("stopping vLLM")
            self.stop()
            self.say("stopped")
