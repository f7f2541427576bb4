"""One benchmark of the served adapter, on one checkpoint, question set and machine:

    run_benchmark(BenchConfig(checkpoint="runs/finetune_qa"))   # = scripts/serve_check.py bench

parts (run in this order; the in-process HF work happens before vLLM starts, so they never share
the CPU):
  hf        HF/peft references: greedy tokens on the gateway's own rows (fp32 and bf16 rows), the
            HF harness's letters, and HF `generate` throughput at batch sizes 1..32 (best kept)
  serve     the real service (vLLM backend, a child process like `scripts/serve_gateway.py`): start-up time
  parity    vLLM greedy tokens (fp32 rows through the gateway; bf16 rows straight to vLLM) vs HF,
            /v1/answer letters vs the HF harness
  describe  "describe this code" on unseen codes: prefix vs no prefix (same adapter) vs adapters
            served without prefix (`describe_baselines`: the run's LoRA arm, or the prefix
            experiment's no-prefix and text-baseline arms), token F1 / ROUGE-L with CIs (serve.describe)
  load      N concurrent streaming clients (serve.loadgen): q/s vs HF's best, latency, TTFT, TPOT
  gateway   the gateway's own work per question on the linker path, and bytes per request
Writes <out_dir>/bench.json and prints a summary.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import torch

from llm_adapter.serving import finetune_questions
from medbase.atomic import atomic_write_text
from medbase.jsonconfig import JsonConfig
from medbase.paths import PROJECT_ROOT, shared_data_path
from qa.datasets.meddx import load_meddx
from qa.datasets.ontology import OntologyQAConfig, build_ontology_qa
from serve.bundle import prepare_bundle
from serve.codes import CodeResolver
from serve.config import Limits, ServeConfig
from serve.describe import describe_prompt, format_describe, score_arms, unseen_codes
from serve.embeds import PromptBuilder, encode_embeds
from serve.launcher import VLLM_KEY_ENV, free_port
from serve.loadgen import percentiles, run_load
from serve.parity import hf_references, served_parity
from serve.server import load_linker, load_serving_vocabulary

PARTS = ("parity", "describe", "load", "gateway")


@dataclass
class BenchConfig(JsonConfig):
    checkpoint: str = "runs/finetune_qa"
    # adapters served without prefix for the describe task, name -> checkpoint; "auto": the run's
    # no-prefix LoRA arm (<run>/lora) when present. The prefix experiment's equal-budget arms go here:
    # {"no prefix": ".../no_prefix__shared__seed0", "text baseline": ".../text_baseline__shared__seed0"}
    describe_baselines: dict | str | None = "auto"
    out_dir: str = "runs/serve_bench"
    parts: list = field(default_factory=lambda: list(PARTS))
    threads: int = 1                       # torch threads of HF, and cores vLLM is bound to
    n_parity: int = 50
    parity_new_tokens: int = 32
    n_describe: int = 150
    describe_new_tokens: int = 32
    load_clients: int = 16                 # the headline run (0 failures expected at cap >= 16)
    sweep_clients: list = field(default_factory=lambda: [32, 64])  # more runs: the best q/s is the ratio's
    load_requests: int = 200
    load_max_tokens: int = 64
    load_min_seconds: float = 60.0
    hf_batch_sizes: list = field(default_factory=lambda: [1, 4, 8, 16, 32, 64])
    n_gateway: int = 200
    meddx: str | None = "auto"             # questions for the gateway-work figure (auto: shared MedDDx)
    linker_index: str | None = None        # None: the project's cached index
    export_dir: str | None = None          # served bundle dir (None: data/cache/serve/<key>)
    vocab_dir: str | None = None
    max_model_len: int | None = None

    def __post_init__(self):
        bad = set(self.parts) - set(PARTS)
        if bad:
            raise ValueError(f"unknown parts {sorted(bad)}; known: {PARTS}")


# ---- the service as a child process (what scripts/serve_gateway.py runs) ------------------------------------
_CHILD = ("import json, sys; from serve.logs import configure_logging; from serve.server import ServiceHandle; "
          "from serve.config import ServeConfig; configure_logging('warning'); "
          "ServiceHandle(ServeConfig.from_dict(json.loads(sys.argv[1]))).serve_forever()")


class ServedProcess:
    """The service in a child interpreter (its own GIL, like a deployment); stopped with SIGINT,
    the Ctrl-C path (gateway first, then vLLM)."""

    def __init__(self, cfg: ServeConfig, vllm_key: str):
        self.cfg, self.vllm_key = cfg, vllm_key
        self.url = f"http://127.0.0.1:{cfg.port}"

    def __enter__(self):

        t0 = time.perf_counter()
        env = {**os.environ, VLLM_KEY_ENV: self.vllm_key,
               "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")])}
        cfg = {**self.cfg.to_dict(), "api_key": self.cfg.api_key}  # to_dict masks the key for logs
        self.proc = subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(cfg)], env=env,
                                     cwd=str(PROJECT_ROOT))
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the service exited with code {self.proc.returncode} (see its output above)")
            if time.perf_counter() - t0 > self.cfg.startup_timeout_s:
                self.__exit__()
                raise RuntimeError(f"the service was not healthy after {self.cfg.startup_timeout_s:g} s")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.startup_s = time.perf_counter() - t0
        self.client = httpx.Client(base_url=self.url, timeout=600)
        self.card = self.client.get("/v1/models").json()["data"][0]
        self.vllm_url = f"http://127.0.0.1:{self.card['backend']['vllm_port']}"
        return self

    def __exit__(self, *exc):
        if getattr(self, "client", None) is not None:
            self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _serve_config(b: BenchConfig, checkpoint: str, export_dir: str | None) -> ServeConfig:
    return ServeConfig(checkpoint=checkpoint, backend="vllm", port=free_port(), embed_dtype="float32",
                       export_dir=export_dir, linker_index=b.linker_index, vocab_dir=b.vocab_dir,
                       max_model_len=b.max_model_len, torch_threads=1, log_level="warning",
                       vllm_threads=",".join(str(i) for i in range(b.threads)),
                       limits=Limits(max_concurrency=max([16, b.load_clients, *b.sweep_clients]), max_queue=64,
                                     max_tokens=max(512, b.load_max_tokens), request_timeout_s=600))


# ---- through the running service --------------------------------------------------------------------
def describe_texts(client: httpx.Client, codes: list[str], with_prefix: bool, max_tokens: int) -> list[str]:
    from concurrent.futures import ThreadPoolExecutor


    def one(c):
        r = client.post("/v1/completions", json={"prompt": describe_prompt(c), "codes": [c] if with_prefix else [],
                                                 "max_tokens": max_tokens, "temperature": 0, "stop": ["\n"]})
        r.raise_for_status()
        return r.json()["choices"][0]["text"]

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, codes))


def vllm_direct_load(sp, bundle, vocab, prompts, b: BenchConfig, clients: int, dtype: str) -> dict:
    """The same load straight at vLLM with ready prompt embeds: what the gateway costs on top."""

    pb = PromptBuilder(bundle, vocab, dtype)
    bodies = [{"model": sp.card["id"], "prompt_embeds": encode_embeds(pb.row(pb.text_prompt_ids(p), pb.prefix_codes(c))),
               "max_tokens": b.load_max_tokens, "temperature": 0, "ignore_eos": True, "return_token_ids": True}
              for p, c in prompts]
    r = run_load(sp.vllm_url, bodies, clients=clients, min_requests=b.load_requests, min_seconds=b.load_min_seconds,
                 headers={"Authorization": f"Bearer {sp.vllm_key}"})
    r.pop("records")
    print(f"  vLLM directly, {clients} clients: {r['questions_per_s']:.2f} questions/s, {r['failed']} failed", flush=True)
    return r


def gateway_work(bundle, vocab, linker, questions, n: int) -> dict:
    """Per question, in process: link (question + options), prefix + row (bf16), serialization."""

    builder = PromptBuilder(bundle, vocab, "bfloat16")
    resolver = CodeResolver(vocab, linker)
    link, embed, encode, total, found = [], [], [], [], 0
    for q in (questions * (n // max(len(questions), 1) + 1))[:n]:
        t0 = time.perf_counter()
        codes = resolver.link(q.question, q.options)
        t1 = time.perf_counter()
        row = builder.row(builder.mc_prompt_ids(q.question, q.options), builder.prefix_codes([c.code_id for c in codes]))
        t2 = time.perf_counter()
        encode_embeds(row)
        t3 = time.perf_counter()
        found += bool(codes)
        link.append(t1 - t0), embed.append(t2 - t1), encode.append(t3 - t2), total.append(t3 - t0)
    ms = lambda x: {k: v * 1e3 for k, v in percentiles(x).items()}  # noqa: E731
    return {"n": n, "with_codes": found, "link_ms": ms(link), "embed_ms": ms(embed), "encode_ms": ms(encode),
            "total_ms": ms(total), "torch_threads": torch.get_num_threads()}


def payload_bytes(bundle, vocab, prompts) -> dict:
    """Bytes per request: client -> gateway JSON, gateway -> vLLM (bf16 rows, base64), and the fp32
    rows a client would have sent to vLLM directly in the design this replaces."""

    out = {}
    for dtype in ("bfloat16", "float32"):
        b = PromptBuilder(bundle, vocab, dtype)
        out[dtype] = float(np.mean([len(encode_embeds(b.row(b.text_prompt_ids(p), b.prefix_codes(c))))
                                    for p, c in prompts]))
    out["client_request"] = float(np.mean([len(json.dumps({"prompt": p, "codes": c, "max_tokens": 64}))
                                           for p, c in prompts]))
    return out


# ---- the whole run ----------------------------------------------------------------------------------
def _benchmark_questions(b: BenchConfig, run_dir: Path, vocab, n: int):

    fc = run_dir / "finetune_config.json"
    if fc.exists():
        return finetune_questions(fc, "test", n)

    qs = build_ontology_qa(vocab, OntologyQAConfig(systems=("ICD10CM",), sizes={"train": 0, "validation": 0,
                                                                                "test": n}))
    return [q for q in qs if q.split == "test"][:n]


def _gateway_questions(b: BenchConfig, fallback):
    """Free-text questions for the linker path: MedDDx when the shared data has it."""

    path = shared_data_path("qa", "MedDDx.json") if b.meddx == "auto" else b.meddx
    if path:

        return load_meddx(path), "MedDDx"
    return fallback, "ontology test questions"


def run_benchmark(b: BenchConfig) -> dict:
    import secrets


    torch.set_num_threads(b.threads)
    out = Path(b.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rec: dict = {"config": b.to_dict(), "cpus": os.cpu_count(), "torch_threads": b.threads}
    t0 = time.perf_counter()
    bundle = prepare_bundle(b.checkpoint, b.export_dir)
    rec["bundle"] = {"dir": str(bundle.directory), "prepare_s": time.perf_counter() - t0, **bundle.manifest}
    run_dir = bundle.adapter_dir.parent
    baselines = b.describe_baselines or {}
    if baselines == "auto":
        baselines = {"no-prefix LoRA arm": str(run_dir / "lora")} if (run_dir / "lora").exists() else {}
    scfg = _serve_config(b, str(bundle.adapter_dir), str(bundle.directory))
    vocab = load_serving_vocabulary(scfg)
    questions = _benchmark_questions(b, run_dir, vocab, b.n_parity)
    codes = unseen_codes(vocab, bundle["medtok_checkpoint"], b.n_describe)
    prompts = [(describe_prompt(c), [c]) for c in codes]
    print(f"benchmark of {bundle.adapter_dir}: {len(questions)} parity questions, {len(codes)} unseen codes", flush=True)
    refs = hf_references(bundle, vocab, questions, b, prompts) if {"parity", "load"} & set(b.parts) else {}
    key = secrets.token_urlsafe(24)
    texts = {}
    with ServedProcess(scfg, key) as sp:
        rec["startup_s"] = sp.startup_s
        print(f"service up in {sp.startup_s:.1f} s at {sp.url}", flush=True)
        sp.client.post("/v1/completions", json={"prompt": prompts[0][0], "codes": prompts[0][1], "max_tokens": 2})
        if "parity" in b.parts:
            rec["parity"] = served_parity(sp, bundle, vocab, questions, refs, b)
        if "describe" in b.parts:
            texts["prefix"] = describe_texts(sp.client, codes, True, b.describe_new_tokens)
            texts["no prefix (same adapter)"] = describe_texts(sp.client, codes, False, b.describe_new_tokens)
        if "load" in b.parts:
            bodies = [{"prompt": p, "codes": c, "max_tokens": b.load_max_tokens, "temperature": 0, "ignore_eos": True}
                      for p, c in prompts]
            runs = {}
            for n in dict.fromkeys([b.load_clients, *b.sweep_clients]):
                runs[n] = run_load(sp.url, bodies, clients=n, min_requests=b.load_requests,
                                   min_seconds=b.load_min_seconds)
                atomic_write_text(out / f"load_records_{n}.json", json.dumps(runs[n].pop("records")))
                print(f"  {n} clients: {runs[n]['questions_per_s']:.2f} questions/s, {runs[n]['failed']} failed",
                      flush=True)
            hf_qps = refs["throughput"]["questions_per_s"]
            best = max(runs, key=lambda n: runs[n]["questions_per_s"])
            direct = vllm_direct_load(sp, bundle, vocab, prompts, b, best, scfg.embed_dtype)
            rec["load"] = {**runs[b.load_clients], "hf_reference": refs["throughput"],
                           "speedup_vs_hf": runs[b.load_clients]["questions_per_s"] / hf_qps,
                           "best_clients": best, "best_questions_per_s": runs[best]["questions_per_s"],
                           "best_speedup_vs_hf": runs[best]["questions_per_s"] / hf_qps, "vllm_direct": direct,
                           "sweep": {n: {k: r[k] for k in ("requests", "failed", "wall_s", "questions_per_s",
                                                           "output_tokens_per_s", "latency_s", "ttft_s", "tpot_s")}
                                     for n, r in runs.items()}}
        rec["gateway_metrics"] = sp.client.get("/metrics").text
    for name, ckpt in (baselines.items() if "describe" in b.parts else []):
        tb = prepare_bundle(ckpt)
        with ServedProcess(_serve_config(b, str(tb.adapter_dir), str(tb.directory)), key) as sp:
            texts[name] = describe_texts(sp.client, codes, False, b.describe_new_tokens)
    if "describe" in b.parts:
        descs = [str(vocab.description(c)) for c in codes]
        rec["describe"] = {**score_arms(descs, texts), "codes": codes,
                           "examples": [{"code": c, "description": d, **{a: t[i] for a, t in texts.items()}}
                                        for i, (c, d) in enumerate(zip(codes[:10], descs[:10]))]}
    if "gateway" in b.parts:
        linker = load_linker(scfg)
        qs, source = _gateway_questions(b, questions)
        rec["gateway"] = {**gateway_work(bundle, vocab, linker, qs, b.n_gateway), "questions": source}
        rec["bytes_per_request"] = payload_bytes(bundle, vocab, prompts[:50])
    atomic_write_text(out / "bench.json", json.dumps(rec, indent=1, default=str))
    print(format_summary(rec))
    print(f"-> {out / 'bench.json'}")
    return rec


def format_summary(rec: dict) -> str:

    lines = []
    if "startup_s" in rec:
        lines.append(f"start-up (bundle cached): {rec['startup_s']:.1f} s; bundle prepared in {rec['bundle']['prepare_s']:.1f} s")
    if "parity" in rec:
        p = rec["parity"]
        lines.append(f"parity on {p['n']} prompts x {p['new_tokens']} new tokens: fp32 rows vLLM == HF "
                     f"{p['fp32_rows_vllm_vs_hf']['exact_match']}/{p['n']}; bf16 rows vLLM == HF(bf16 rows) "
                     f"{p['bf16_rows_vllm_vs_hf_bf16_rows']['exact_match']}/{p['n']}, == HF(fp32 rows) "
                     f"{p['bf16_rows_vllm_vs_hf_fp32_rows']['exact_match']}/{p['n']}; letters == HF harness "
                     f"{p['letters_equal_harness']}/{p['n']} (max |dlogprob| {p['letter_logprob_max_abs_diff']:.2e}; "
                     f"accuracy harness {p['harness_accuracy']:.3f}, served {p['served_accuracy']:.3f})")
    if "describe" in rec:
        lines.append(format_describe(rec["describe"]))
    if "load" in rec:
        ld, hf = rec["load"], rec["load"]["hf_reference"]
        f = lambda d: f"p50 {d['p50'] * 1e3:.0f} / p90 {d['p90'] * 1e3:.0f} / p99 {d['p99'] * 1e3:.0f} ms"  # noqa: E731
        lines.append(f"load: {ld['clients']} clients, {ld['requests']} requests in {ld['wall_s']:.0f} s, "
                     f"{ld['failed']} failed; {ld['questions_per_s']:.2f} questions/s "
                     f"({ld['output_tokens_per_s']:.0f} tokens/s) vs HF generate batch {hf['best_batch_size']} "
                     f"{hf['questions_per_s']:.2f} questions/s: x{ld['speedup_vs_hf']:.2f}; best "
                     f"{ld['best_questions_per_s']:.2f} questions/s with {ld['best_clients']} clients: "
                     f"x{ld['best_speedup_vs_hf']:.2f}; vLLM without the gateway "
                     f"{ld['vllm_direct']['questions_per_s']:.2f} questions/s")
        lines.append(f"  latency {f(ld['latency_s'])}; TTFT {f(ld['ttft_s'])}; TPOT {f(ld['tpot_s'])}")
    if "gateway" in rec:
        g = rec["gateway"]
        lines.append(f"gateway work per question ({g['questions']}, linker path, n={g['n']}, {g['with_codes']} "
                     f"with codes): p50 {g['total_ms']['p50']:.1f} ms, p90 {g['total_ms']['p90']:.1f} ms "
                     f"(link p50 {g['link_ms']['p50']:.1f}, prefix+rows {g['embed_ms']['p50']:.1f}, "
                     f"serialize {g['encode_ms']['p50']:.1f})")
        by = rec["bytes_per_request"]
        lines.append(f"bytes per request: client->gateway {by['client_request']:.0f}; gateway->vLLM bf16 "
                     f"{by['bfloat16'] / 1e3:.1f} kB vs fp32 {by['float32'] / 1e3:.1f} kB")
    return "\n".join(lines)
