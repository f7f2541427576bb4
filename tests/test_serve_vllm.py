"""The real service with the vLLM backend, started as a user starts it (`scripts/serve_gateway.py`), on
loopback, with a tiny model, the toy vocabulary and a small linker index; needs `.venv-vllm`
(`make serve-env`, which `make test` builds first) and skips, saying why, only without it.

- parity: vLLM's greedy tokens (32 new tokens, fp32 on both sides) equal HF/peft's on the same
  rows, and /v1/answer's letters equal the HF harness's;
- bad requests through the gateway get 4xx; vLLM itself refuses bad prompt embeds (400);
  afterwards both are healthy and still give the HF answers;
- vLLM issue 51122 regression: prompt-embeds requests (LoRA) mixed with plain token requests in
  one batch all succeed and stay exact (LoRA only on the adapter's modules, not embed_tokens);
- Ctrl-C (SIGINT) on scripts/serve_gateway.py stops the gateway and vLLM.
One vLLM start for the module (about 30-80 s on 2 busy cores).
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from serve.config import Limits, ServeConfig
from serve.launcher import VLLM_KEY_ENV, free_port, installed_vllm_version
from serve.parity import compare
from tests.serve_fixtures import HIDDEN, shared_tiny_run

ROOT = Path(__file__).resolve().parents[1]
VLLM_PY = ROOT / ".venv-vllm" / "bin" / "python"
VLLM_KEY = "vllm-test-key-0123456789"
N_NEW = 32

if not VLLM_PY.exists() or installed_vllm_version(VLLM_PY) is None:
    reason = f"{VLLM_PY} missing: the vLLM tests need `make serve-env` (make test builds it; it failed or was skipped)"
    print(f"\nSKIP tests/test_serve_vllm.py: {reason}", file=sys.stderr)
    pytest.skip(reason, allow_module_level=True)


def _b64(t: torch.Tensor) -> str:
    buf = io.BytesIO()
    torch.save(t, buf)
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    from serve.bundle import prepare_bundle
    from serve.embeds import PromptBuilder

    run = shared_tiny_run()
    bundle = prepare_bundle(run.run_dir, run.root / "bundle", vector_source=run.vectors)
    cfg = ServeConfig(checkpoint=str(run.run_dir), backend="vllm", port=free_port(), export_dir=str(bundle.directory),
                      embed_dtype="float32", max_model_len=512, linker_index=str(run.linker_dir),
                      vocab_dir=str(run.vocab_dir), log_level="warning",
                      limits=Limits(max_body_bytes=64 * 1024, max_codes=16, max_question_chars=2000, max_tokens=64))
    cfg_path = run.root / "serve.json"
    cfg.save(cfg_path)
    env = {**os.environ, VLLM_KEY_ENV: VLLM_KEY, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "serve_gateway.py"), "--config", str(cfg_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=str(ROOT))
    lines, url, t0 = [], None, time.time()
    while time.time() - t0 < 600:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("serving "):
            url = line.split(" at ")[1].split()[0]
            break
    if url is None:
        proc.kill()
        pytest.fail("service did not start:\n" + "".join(lines[-30:]))
    client = httpx.Client(base_url=url, timeout=120)
    card = client.get("/v1/models").json()["data"][0]
    builder = PromptBuilder(bundle, run.vocab, embed_dtype="float32")
    yield {"proc": proc, "client": client, "card": card, "run": run, "bundle": bundle, "builder": builder,
           "vllm": httpx.Client(base_url=f"http://127.0.0.1:{card['backend']['vllm_port']}", timeout=120,
                                headers={"Authorization": f"Bearer {VLLM_KEY}"}), "startup_line": lines[-1]}
    client.close()
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        _kill_group(card["backend"]["vllm_pid"])


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@pytest.fixture(scope="module")
def hf(service):
    """The adapter in HF/peft (fp32), and its greedy tokens on the gateway's own rows."""
    from transformers import AutoModelForCausalLM

    from llm_adapter.model import PrefixLM

    b, builder = service["bundle"], service["builder"]
    lm = AutoModelForCausalLM.from_pretrained(str(b.base_dir), dtype=torch.float32)
    model = PrefixLM.from_pretrained(b.adapter_dir, lm=lm, tokenizer=builder.tokenizer,
                                     vector_source=service["run"].vectors)

    def generate(prompt: str, codes: list[str]) -> list[int]:
        row = builder.row(builder.text_prompt_ids(prompt), builder.prefix_codes(codes))
        with torch.no_grad():
            out = model.lm.generate(inputs_embeds=row[None], attention_mask=torch.ones(1, row.shape[0], dtype=torch.long),
                                    max_new_tokens=N_NEW, do_sample=False, pad_token_id=0,
                                    eos_token_id=b["stop_token_ids"])
        return [int(t) for t in out[0]]

    return model, generate


def _prompts(vocab, n: int):
    codes = [c for c, k in zip(vocab.codes["code_id"], vocab.codes["kind"]) if k == "code"][::17][:n]
    return [(f"What does the ICD-10-CM code {c} denote?\nAnswer:", [c]) for c in codes]


def _complete(client, prompt, codes, **kw):
    r = client.post("/v1/completions", json={"prompt": prompt, "codes": codes, "max_tokens": N_NEW,
                                             "temperature": 0, **kw})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["token_ids"]


def test_vllm_greedy_tokens_equal_hf(service, hf):
    prompts = _prompts(service["run"].vocab, 8)
    got = [_complete(service["client"], p, c) for p, c in prompts]
    want = [hf[1](p, c) for p, c in prompts]
    res = compare(want, got, service["bundle"]["stop_token_ids"])
    assert res["exact_match"] == len(prompts), res["first_mismatch"]
    assert all(len(t) == N_NEW for t in got)  # 32 new tokens each (no early stop on this model)
    assert service["card"]["backend"]["vllm_version"] == "0.32.0"


def test_vllm_letters_equal_the_hf_harness(service, hf):
    from qa.scoring import score_multiple_choice
    from qa.types import MCQuestion

    model, tok = hf[0], service["builder"].tokenizer
    qs = [MCQuestion(f"q{i}", f"What does the code {c} denote?", ["Heart failure", "Lung infection", "Kidney tumor",
                                                                    "Eye cyst"], i % 4, codes=[c])
          for i, c in enumerate(["ICD10CM:A03.1", "ICD10CM:B00.2", "ICD10CM:C04.3", "ICD9CM:100.2"])]
    ref = score_multiple_choice(model, tok, qs, input_builder=model.input_builder(), progress=False, batch_size=1)
    for i, q in enumerate(qs):
        out = service["client"].post("/v1/answer", json={"question": q.question, "options": q.options,
                                                         "codes": q.codes}).json()
        assert out["backend"] == "vllm" and out["answer"]["index"] == int(ref.pred[i])
        assert np.allclose(list(out["answer"]["logprobs"].values()), ref.letter_logprobs[i], atol=1e-3)


def test_streamed_tokens_equal_the_completion(service):
    p, c = _prompts(service["run"].vocab, 1)[0]
    full = _complete(service["client"], p, c)
    ids = []
    with service["client"].stream("POST", "/v1/completions", json={"prompt": p, "codes": c, "max_tokens": N_NEW,
                                                                   "temperature": 0, "stream": True}) as s:
        for line in s.iter_lines():
            if line.startswith("data: {"):
                ids += json.loads(line[6:])["choices"][0]["token_ids"]
    assert ids == full


GATEWAY_BAD = [
    (dict(content=b'{"question": ', headers={"content-type": "application/json"}), 400),
    (dict(json={"question": ""}), 400),
    (dict(json={"question": "q?", "codes": ["ICD10CM:A03.1"] * 10_000}), 413),
    (dict(json={"question": "q?", "options": ["a", "b"], "codes": ["ICD10CM:Z99.9"]}), 400),
    (dict(json={"question": "x" * 1_000_000}), 413),
    (dict(json={"question": ["not", "a", "string"], "options": {"a": 1}}), 422),
]


def _still_right(service, hf):
    assert service["client"].get("/health").status_code == 200
    p, c = _prompts(service["run"].vocab, 1)[0]
    assert _complete(service["client"], p, c) == hf[1](p, c)


def test_gateway_refuses_bad_requests_and_stays_right(service, hf):
    for kwargs, status in GATEWAY_BAD:
        r = service["client"].post("/v1/answer", **kwargs)
        assert r.status_code == status, (kwargs.get("json", kwargs.get("content"))[:80] if False else r.text)
        _still_right(service, hf)


def test_vllm_refuses_bad_prompt_embeds_and_stays_right(service, hf):
    """Straight at vLLM (loopback, its key): what it checks itself."""
    v = service["vllm"]
    body = {"model": service["card"]["id"], "max_tokens": 4, "temperature": 0}
    cases = {"bad base64": "not*base64!", "wrong hidden size": _b64(torch.randn(5, HIDDEN // 2)),
             "non-float dtype": _b64(torch.ones(5, HIDDEN, dtype=torch.long)), "empty tensor": _b64(torch.zeros(0, HIDDEN))}
    for name, payload in cases.items():
        r = v.post("/v1/completions", json={**body, "prompt_embeds": payload})
        assert r.status_code == 400, (name, r.text)
        assert v.get("/health").status_code == 200
        _still_right(service, hf)
    # vLLM does not look at the values: a NaN tensor is "served" (garbage) -- why the gateway checks rows
    r = v.post("/v1/completions", json={**body, "prompt_embeds": _b64(torch.full((5, HIDDEN), float("nan")))})
    assert r.status_code == 200
    assert v.post("/v1/completions", json={**body, "prompt": "hi"}, headers={"Authorization": "Bearer x"}).status_code == 401
    _still_right(service, hf)


def test_prompt_embeds_mixed_with_plain_requests_in_one_batch(service, hf):
    """Regression for vLLM issue 51122 (LoRA on embed_tokens + prompt embeds): embeds requests and
    plain token requests, with and without the LoRA, in flight together."""
    prompts = _prompts(service["run"].vocab, 6)
    want = [hf[1](p, c) for p, c in prompts]
    v, client, lora = service["vllm"], service["client"], service["card"]["id"]
    base = service["card"]["root"]

    def embeds(i):
        return _complete(client, *prompts[i])

    def plain(i):
        r = v.post("/v1/completions", json={"model": lora if i % 2 else base, "prompt": prompts[i][0],
                                           "max_tokens": N_NEW, "temperature": 0})
        return r.status_code

    with ThreadPoolExecutor(12) as pool:
        e = [pool.submit(embeds, i) for i in range(6)]
        p = [pool.submit(plain, i) for i in range(6)]
        got, statuses = [f.result() for f in e], [f.result() for f in p]
    assert statuses == [200] * 6
    assert compare(want, got, service["bundle"]["stop_token_ids"])["exact_match"] == 6
    assert v.get("/health").status_code == 200


def test_ctrl_c_stops_gateway_and_vllm(service):
    """Last in the module: SIGINT to scripts/serve_gateway.py; both processes end, both ports are free."""
    from serve.launcher import port_in_use

    proc, card = service["proc"], service["card"]
    vllm_pid, vllm_port = card["backend"]["vllm_pid"], card["backend"]["vllm_port"]
    port = int(str(service["client"].base_url).rsplit(":", 1)[1].strip("/"))
    proc.send_signal(signal.SIGINT)
    assert proc.wait(90) == 0
    out = proc.stdout.read()
    assert "stopping vLLM" in out and "stopped" in out
    with pytest.raises(ProcessLookupError):
        os.kill(vllm_pid, 0)
    assert not port_in_use("127.0.0.1", port) and not port_in_use("127.0.0.1", vllm_port)
