"""Backend: a stock vLLM OpenAI server (own venv, loopback only), fed `prompt_embeds`.

Each request is one POST /v1/completions with the gateway's row as base64 `torch.save` bytes
(bf16 by default: half the fp32 bytes; vLLM casts to the model dtype), the adapter named as the
LoRA module, greedy or sampled settings, and `return_token_ids`. Multiple-choice letters come from
`logprob_token_ids` (vLLM 0.32 reports the log-probabilities of chosen token ids at each
generated position, from the full-vocabulary log-softmax; checked to work with prompt embeds),
so the letter is chosen as the HF harness chooses it, without generating text. What vLLM cannot
do with prompt embeds is `prompt_logprobs`/`echo` (option-likelihood scoring): the HF backend
does that. This is the one vLLM client of the project (`scripts/serve_check.py` uses it too).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import AsyncIterator

import httpx

from serve.backends.base import Backend, BackendError, Delta, Generation, SamplingSpec
from serve.embeds import encode_embeds

TOKEN_ID_PREFIX = "token_id:"


def completion_body(model: str, row, spec: SamplingSpec, request_id: str, stream: bool = False) -> dict:
    body = {"model": model, "prompt_embeds": encode_embeds(row) if row is not None else None, "max_tokens": int(spec.max_tokens),
            "temperature": float(spec.temperature), "top_p": float(spec.top_p), "return_token_ids": True,
            # the gateway's id (in vLLM's logs too), made unique: a client may reuse its X-Request-ID
            "request_id": f"{request_id}-{uuid.uuid4().hex[:8]}", "stream": stream}
    if spec.seed is not None:
        body["seed"] = int(spec.seed)
    if spec.stop:
        body["stop"] = list(spec.stop)
    if spec.ignore_eos:
        body["ignore_eos"] = True
    if spec.logprob_token_ids is not None:
        body.update(logprobs=1, logprob_token_ids=[int(t) for t in spec.logprob_token_ids],
                    return_tokens_as_token_ids=True)
    return body


def first_position_logprobs(choice: dict) -> dict[int, float] | None:
    """{token id: log-prob} at the first generated position of a completion choice."""
    lp = choice.get("logprobs") or {}
    tops = lp.get("top_logprobs") or []
    if not tops or tops[0] is None:
        return None
    return {int(k[len(TOKEN_ID_PREFIX):]): float(v) for k, v in tops[0].items() if k.startswith(TOKEN_ID_PREFIX)}


def _error_message(resp: httpx.Response) -> str:
    try:
        err = resp.json().get("error", {})
        return str(err.get("message", err))[:500]
    except (ValueError, AttributeError):
        return resp.text[:500]


class VLLMServerBackend(Backend):
    name = "vllm"

    def __init__(self, base_url: str, model: str, *, timeout_s: float = 300.0, max_connections: int = 64,
                 api_key: str | None = None, server_info: dict | None = None):
        self.base_url, self.model = base_url.rstrip("/"), model
        self.server_info = server_info or {}
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(base_url=self.base_url, timeout=httpx.Timeout(timeout_s, connect=5.0),
                                        headers=headers,
                                        limits=httpx.Limits(max_connections=max_connections,
                                                            max_keepalive_connections=max_connections))

    def info(self) -> dict:
        return {"backend": self.name, "url": self.base_url, "lora_module": self.model, **self.server_info}

    async def health(self) -> bool:
        try:
            return (await self.client.get("/health", timeout=5.0)).status_code == 200
        except httpx.HTTPError:
            return False

    def _raise_for(self, resp: httpx.Response) -> None:
        if resp.status_code < 400:
            return
        msg = _error_message(resp)
        # vLLM's 4xx are about the request itself (e.g. context length); anything else is the backend's
        status = 400 if 400 <= resp.status_code < 500 else 502
        raise BackendError(f"vLLM answered {resp.status_code}: {msg}", status=status)

    async def generate(self, row, spec, request_id) -> Generation:
        t0 = time.perf_counter()
        body = completion_body(self.model, row, spec, request_id)
        encode_s = time.perf_counter() - t0
        try:
            resp = await self.client.post("/v1/completions", json=body)
        except httpx.TimeoutException:
            raise BackendError("vLLM did not answer in time", status=504) from None
        except httpx.HTTPError as e:
            raise BackendError(f"vLLM unreachable: {type(e).__name__}", status=503) from None
        self._raise_for(resp)
        data = resp.json()
        choice = data["choices"][0]
        return Generation([int(t) for t in choice.get("token_ids") or []], choice.get("text", ""),
                          choice.get("finish_reason") or "stop",
                          int((data.get("usage") or {}).get("prompt_tokens") or row.shape[0]),
                          first_position_logprobs(choice), len(body["prompt_embeds"]), encode_s)

    async def stream(self, row, spec, request_id) -> AsyncIterator[Delta]:
        body = completion_body(self.model, row, spec, request_id, stream=True)
        try:
            async with self.client.stream("POST", "/v1/completions", json=body) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    self._raise_for(resp)
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        break
                    chunk = json.loads(payload)
                    if "error" in chunk:
                        raise BackendError(f"vLLM stream error: {chunk['error']}", status=502)
                    for choice in chunk.get("choices", []):
                        yield Delta(choice.get("text", ""), [int(t) for t in choice.get("token_ids") or []],
                                    choice.get("finish_reason"))
        except httpx.TimeoutException:
            raise BackendError("vLLM did not answer in time", status=504) from None
        except httpx.HTTPError as e:
            raise BackendError(f"vLLM unreachable: {type(e).__name__}", status=503) from None

    async def close(self) -> None:
        await self.client.aclose()
