"""The gateway served for real on loopback (uvicorn) with the in-process HF backend: a tiny
model, the toy vocabulary and a small linker index. Answers equal the HF harness; every bad
request gets a 4xx, after which /health is 200 and a valid request still gives the same answer.
Admission control, the API key and timeouts are checked on the app with a stub backend."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import httpx
import numpy as np
import pytest
import torch

from qa.types import MCQuestion
from serve.backends.base import Backend, Generation
from serve.config import Limits, ServeConfig
from serve.gateway import create_app
from serve.server import ServiceHandle
from serve.service import QAService
from tests.serve_fixtures import shared_tiny_run

KEY = "test-api-key-0123456789"
LIMITS = Limits(max_body_bytes=64 * 1024, max_codes=16, max_question_chars=2000, max_tokens=64, default_max_tokens=16)
QUESTION = MCQuestion("q0", "Which organ does a failure of right heart affect?", ["heart", "lung", "kidney", "skin"], 0,
                      codes=["ICD10CM:A03.1"])


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    run = shared_tiny_run()
    cfg = ServeConfig(checkpoint=str(run.run_dir), backend="hf", port=0, export_dir=str(run.root / "bundle"),
                      embed_dtype="float32", max_model_len=512, linker_index=str(run.linker_dir),
                      vocab_dir=str(run.vocab_dir), limits=LIMITS, log_level="warning")
    handle = ServiceHandle(cfg, vocab=run.vocab, linker=run.linker, bundle_kwargs={"vector_source": run.vectors},
                           say=lambda *a: None).start()
    client = httpx.Client(base_url=handle.url, timeout=60)
    yield handle, run, client
    client.close()
    handle.stop()


@pytest.fixture(scope="module")
def harness(served):
    """The HF harness on the full PrefixLM (what `make demo` scores with)."""
    from transformers import AutoModelForCausalLM

    from llm_adapter.model import PrefixLM

    handle, run, _ = served
    b, tok = handle.bundle, handle.service.builder.tokenizer
    lm = AutoModelForCausalLM.from_pretrained(str(b.base_dir), dtype=torch.float32)
    return PrefixLM.from_pretrained(b.adapter_dir, lm=lm, tokenizer=tok, vector_source=run.vectors), tok


def _answer(client, q: MCQuestion, **extra):
    r = client.post("/v1/answer", json={"question": q.question, "options": q.options, "codes": q.codes, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def _expected(harness, q: MCQuestion):
    from qa.scoring import score_multiple_choice

    model, tok = harness
    return score_multiple_choice(model, tok, [q], input_builder=model.input_builder(), progress=False)


def test_answer_letters_equal_the_hf_harness(served, harness):
    _, run, client = served
    codes = ["ICD10CM:A03.1", "ICD10CM:B00.2", "ICD9CM:100.2", "ICD10CM:C04.3"]
    for i, c in enumerate(codes):
        q = MCQuestion(f"q{i}", f"What does the code {c} denote?", ["Heart failure", "Lung infection",
                                                                     "Kidney tumor", "Eye cyst"][: 2 + i % 3], 0,
                       codes=[c, codes[(i + 1) % 4]])
        out = _answer(served[2], q)
        ref = _expected(harness, q)
        got = [out["answer"]["logprobs"][L] for L in "ABCD"[: len(q.options)]]
        assert np.allclose(got, ref.letter_logprobs[0], atol=1e-4)
        assert out["answer"]["index"] == int(ref.pred[0]) and out["answer"]["scoring"] == "letter"
        assert out["prefix_codes"] == q.codes[:2] and out["request_id"] and out["backend"] == "hf"


def test_option_scoring_is_the_jobs_option_likelihood(served, harness):
    from llm_adapter.option_scoring import score_by_option_likelihood

    out = _answer(served[2], QUESTION, scoring="option")
    ref = score_by_option_likelihood(harness[0], harness[1], [QUESTION], progress=False)
    assert np.allclose(list(out["answer"]["option_scores"].values()), ref.letter_logprobs[0], atol=1e-5)
    assert out["answer"]["index"] == int(ref.pred[0])


def test_linker_finds_codes_unless_codes_are_given(served):
    client = served[2]
    q = "Patient with failure of right heart and lung infection: which organ first?"
    linked = client.post("/v1/answer", json={"question": q, "options": ["heart", "lung"]}).json()
    got = [(c["code_id"], c["mention"], c["start"], c["end"]) for c in linked["codes"]]
    assert got[0] == ("ICD10CM:A03.1", "failure of right heart", 13, 35)
    assert linked["codes"][0]["source"] == "linker" and linked["codes"][0]["score"] >= 0.7
    assert linked["prefix_codes"] == [c[0] for c in got][:2]
    none = client.post("/v1/answer", json={"question": q, "options": ["heart", "lung"], "codes": []}).json()
    assert none["codes"] == [] and none["prefix_codes"] == []
    assert linked["prompt_tokens"] - none["prompt_tokens"] == 2 * 2  # 2 codes x 2 tokens per code


# ---- negative requests: 4xx, then healthy and still right ------------------------------------
BAD = [
    ("malformed JSON", dict(content=b'{"question": "x", "options": [', headers={"content-type": "application/json"}), 400),
    ("empty question", dict(json={"question": "   ", "options": ["a", "b"]}), 400),
    ("10,000 codes", dict(json={"question": "q?", "codes": ["ICD10CM:A03.1"] * 10_000}), 413),
    ("2,000 codes", dict(json={"question": "q?", "codes": [f"A0{i % 6}.{i % 4}" for i in range(2000)]}), 400),
    ("unknown code", dict(json={"question": "q?", "options": ["a", "b"], "codes": ["ICD10CM:Z99.9"]}), 400),
    ("malformed code", dict(json={"question": "q?", "codes": ["E11.9'; DROP TABLE"]}), 400),
    ("huge question", dict(json={"question": "x" * 1_000_000}), 413),
    ("long question", dict(json={"question": "x" * 5_000}), 400),
    ("question not a string", dict(json={"question": 123, "options": ["a", "b"]}), 422),
    ("options not a list", dict(json={"question": "q?", "options": "a,b"}), 422),
    ("codes not strings", dict(json={"question": "q?", "codes": [1, 2]}), 422),
    ("unknown field", dict(json={"question": "q?", "prompt_embeds": "AAAA"}), 422),
    ("one option", dict(json={"question": "q?", "options": ["a"]}), 400),
    ("eleven options", dict(json={"question": "q?", "options": [str(i) for i in range(11)]}), 400),
    ("max_tokens over the cap", dict(json={"question": "q?", "max_tokens": 65}), 400),
    ("unknown model", dict(json={"question": "q?", "model": "gpt-4"}), 404),
    ("body not JSON", dict(content=b"question=x", headers={"content-type": "application/x-www-form-urlencoded"}), 422),
]


@pytest.mark.parametrize("name,kwargs,status", BAD, ids=[b[0] for b in BAD])
def test_bad_request_is_refused_and_service_stays_correct(served, harness, name, kwargs, status):
    client = served[2]
    r = client.post("/v1/answer", **kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"]["code"] == status and body["request_id"] == r.headers["x-request-id"]
    assert len(r.content) < 4000  # errors never echo the input back
    if name == "unknown code":
        assert "nearest valid codes: ICD10CM:" in body["error"]["message"]
    assert client.get("/health").status_code == 200
    out = _answer(client, QUESTION)
    ref = _expected(harness, QUESTION)
    assert out["answer"]["index"] == int(ref.pred[0])
    assert np.allclose(list(out["answer"]["logprobs"].values()), ref.letter_logprobs[0], atol=1e-4)


def test_openai_endpoints_stream_and_refuse_what_they_cannot_do(served):
    client = served[2]
    body = {"prompt": "What does the ICD-10-CM code ICD10CM:A03.1 denote?\nAnswer:", "codes": ["ICD10CM:A03.1"],
            "max_tokens": 12, "temperature": 0}
    r = client.post("/v1/completions", json=body, headers={"X-Request-ID": "my-req-1"})
    full = r.json()
    assert r.headers["x-request-id"] == "my-req-1" == full["request_id"]
    assert full["object"] == "text_completion" and len(full["choices"][0]["token_ids"]) == 12
    assert full["usage"]["prompt_tokens"] == 2 + len(body["prompt"])  # 2 prefix rows + 1 token per character
    text, ids = "", []
    with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as s:
        events = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {")]
    assert events[0]["codes"][0]["code_id"] == "ICD10CM:A03.1"
    for e in events:
        text += e["choices"][0]["text"]
        ids += e["choices"][0]["token_ids"]
    assert ids == full["choices"][0]["token_ids"] and text == full["choices"][0]["text"]
    chat = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "What is A03.1?"}],
                                                      "max_tokens": 8, "temperature": 0}).json()
    assert chat["object"] == "chat.completion" and chat["choices"][0]["message"]["role"] == "assistant"
    for bad, status in [({**body, "n": 2}, 400), ({**body, "logprobs": 5}, 400), ({**body, "echo": True}, 400),
                        ({**body, "prompt": ["a", "b"]}, 422), ({**body, "temperature": 5.0}, 400),
                        ({**body, "max_tokens": 10_000}, 400)]:
        assert client.post("/v1/completions", json=bad).status_code == status
    msgs = {"messages": [{"role": "user", "content": [{"type": "prompt_embeds", "prompt_embeds": "AAAA"}]}]}
    assert client.post("/v1/chat/completions", json=msgs).status_code == 422  # clients never send embeddings


def test_models_and_metrics(served):
    client = served[2]
    card = client.get("/v1/models").json()["data"][0]
    handle = served[0]
    assert card["id"] == "lora_prefix" and card["adapter"] == str(handle.bundle.adapter_dir)
    assert card["medtok_checkpoint"] == str(served[1].medtok_dir.resolve()) and card["linker"] is True
    assert card["versions"]["torch"] == torch.__version__.split("+")[0] or card["versions"]["torch"]
    text = client.get("/metrics").text
    assert 'medtok_gateway_requests_total{endpoint="/v1/answer",status="200"}' in text
    assert 'medtok_gateway_requests_total{endpoint="/v1/answer",status="400"}' in text
    for stage in ("link", "embed", "backend", "queue"):
        assert f'medtok_gateway_stage_seconds_count{{stage="{stage}"}}' in text
    assert "medtok_gateway_queue_depth" in text and "medtok_gateway_request_seconds_bucket" in text


# ---- the app with a stub backend: admission, API key, timeouts ------------------------------
class _StubBackend(Backend):
    name = "stub"

    def __init__(self):
        self.release = asyncio.Event()
        self.delay = 0.0

    async def generate(self, row, spec, request_id):
        await self.release.wait()
        await asyncio.sleep(self.delay)
        return Generation([38], "A", "length", int(row.shape[0]), {38: -0.1, 39: -2.0})

    async def stream(self, row, spec, request_id):
        yield  # pragma: no cover

    async def health(self):
        return True


def _stub_service(served, **cfg_changes):
    handle = served[0]
    s = handle.service
    cfg = dataclasses.replace(s.config, **cfg_changes)
    return QAService(cfg, s.bundle, s.builder, s.resolver, _StubBackend())


def test_concurrency_cap_answers_429_not_an_unbounded_queue(served):
    svc = _stub_service(served, limits=dataclasses.replace(LIMITS, max_concurrency=2, max_queue=1))
    app = create_app(svc)
    body = {"question": "q?", "options": ["a", "b"], "codes": []}

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
            held = [asyncio.create_task(c.post("/v1/answer", json=body)) for _ in range(3)]  # 2 run, 1 waits
            while app.state.admission.waiting < 1:
                await asyncio.sleep(0.01)
            over = await c.post("/v1/answer", json=body)
            svc.backend.release.set()
            return over, [await t for t in held], (await c.get("/metrics")).text

    over, held, metrics = asyncio.run(scenario())
    assert over.status_code == 429 and over.headers["retry-after"] == "1"
    assert "retry later" in over.json()["error"]["message"]
    assert [r.status_code for r in held] == [200, 200, 200]
    assert 'medtok_gateway_rejected_total{reason="queue_full"} 1.0' in metrics


def test_request_timeout_is_504(served):
    svc = _stub_service(served, limits=dataclasses.replace(LIMITS, request_timeout_s=0.2))
    svc.backend.release.set()
    svc.backend.delay = 5.0
    from fastapi.testclient import TestClient

    with TestClient(create_app(svc)) as c:
        r = c.post("/v1/answer", json={"question": "q?", "options": ["a", "b"], "codes": []})
        assert r.status_code == 504 and "longer than 0.2 s" in r.json()["error"]["message"]
        assert c.get("/health").status_code == 200


def test_api_key_on_every_endpoint_but_health(served):
    svc = _stub_service(served, host="0.0.0.0", api_key=KEY)
    svc.backend.release.set()
    from fastapi.testclient import TestClient

    with TestClient(create_app(svc)) as c:
        assert c.get("/health").status_code == 200
        for method, path in [("get", "/v1/models"), ("get", "/metrics"), ("post", "/v1/answer"),
                             ("post", "/v1/completions"), ("post", "/v1/chat/completions")]:
            assert getattr(c, method)(path).status_code == 401
            assert getattr(c, method)(path, headers={"Authorization": "Bearer wrong-key-000000000"}).status_code == 401
        ok = c.post("/v1/answer", json={"question": "q?", "options": ["a", "b"], "codes": []},
                    headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200 and ok.json()["answer"]["letter"] == "A"
        assert c.get("/v1/models", headers={"X-API-Key": KEY}).status_code == 200


def test_eval_qa_through_the_server_equals_the_hf_harness(served, harness, tmp_path):
    """`evaluate_via_server` (eval_qa.py --backend server): same per-question predictions and
    letter log-probabilities as the HF harness on the adapter, same results format."""
    from qa.harness import EvalConfig, evaluate_questions
    from qa.datasets import load_dataset
    from serve.client import evaluate_via_server

    handle, run, _ = served
    cfg = EvalConfig(dataset="ontology", data_path=str(run.vocab_dir), split="test", n_boot=200,
                     output=str(tmp_path / "server.json"), dataset_kwargs={"sizes": {"test": 12}, "n_options": 3})
    got = evaluate_via_server(cfg, handle.url, concurrency=4, print_table=False)
    qs = load_dataset("ontology", run.vocab_dir, split="test", sizes={"test": 12}, n_options=3)
    model, tok = harness
    want = evaluate_questions(model, tok, qs, input_builder=model.input_builder(), n_boot=200, progress=False)
    assert got["n"] == want["n"] == 12 and got["system"] == "server-lora_prefix"
    for g, w in zip(got["per_question"], want["per_question"]):
        assert g["id"] == w["id"] and g["pred"] == w["pred"]
        assert np.allclose(g["letter_logprobs"], w["letter_logprobs"], atol=2e-4)
    assert got["overall"] == want["overall"]
    assert json.loads((tmp_path / "server.json").read_text())["served_model"]["id"] == "lora_prefix"


def test_chunked_body_over_the_limit_is_413(served):
    """No Content-Length (chunked transfer): the body is counted as it arrives."""
    client = served[2]

    def chunks():
        yield b'{"question": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}'

    r = client.post("/v1/answer", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "over 65536 bytes" in r.json()["error"]["message"]
    assert client.get("/health").status_code == 200
