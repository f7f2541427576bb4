"""The QA service without HTTP: validate -> codes -> prompt row -> backend -> answer.

`QAService` is what the gateway's endpoints call (and what tests and benchmarks can call
directly). Every client error raises `ServiceError` with its HTTP status; every check that
protects the backend (lengths, counts, code syntax, context length, finite embeddings) happens
here, before a byte goes to vLLM.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass

from qa.types import LETTERS
from serve.backends.base import BackendError, SamplingSpec
from serve.codes import CodeError
from serve.embeds import EmbeddingError

log = logging.getLogger("medtok.serve")


class ServiceError(Exception):
    def __init__(self, message: str, status: int = 400, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.kind = status, kind


@dataclass
class Prepared:
    """A request made ready for the backend."""

    row: object
    codes: list            # ResolvedCode
    prefix_codes: list[str]
    prompt_tokens: int
    link_s: float
    embed_s: float


class QAService:
    def __init__(self, config, bundle, builder, resolver, backend, metrics=None):
        self.config, self.limits = config, config.limits
        self.bundle, self.builder, self.resolver, self.backend = bundle, builder, resolver, backend
        self.metrics = metrics
        self.served_name = config.served_name or bundle.adapter_dir.name
        self.max_model_len = config.max_model_len or min(bundle["max_position_embeddings"], 2048)

    # ---- validation --------------------------------------------------------------------------
    def check_text(self, name: str, text, max_chars: int) -> str:
        if not isinstance(text, str):
            raise ServiceError(f"{name} must be a string")
        if not text.strip():
            raise ServiceError(f"{name} is empty")
        if len(text) > max_chars:
            raise ServiceError(f"{name} has {len(text)} characters; the limit is {max_chars}")
        return text

    def check_options(self, options) -> list[str] | None:
        if options is None:
            return None
        if not 2 <= len(options) <= self.limits.max_options:
            raise ServiceError(f"options: give 2..{self.limits.max_options}, got {len(options)}")
        return [self.check_text(f"options[{i}]", o, self.limits.max_option_chars) for i, o in enumerate(options)]

    def max_tokens(self, value) -> int:
        if value is None:
            return self.limits.default_max_tokens
        if not 1 <= int(value) <= self.limits.max_tokens:
            raise ServiceError(f"max_tokens must be in 1..{self.limits.max_tokens}, got {value}")
        return int(value)

    def check_sampling(self, temperature: float, top_p: float) -> None:
        if not (math.isfinite(temperature) and 0.0 <= temperature <= 2.0):
            raise ServiceError(f"temperature must be in [0, 2], got {temperature}")
        if not (math.isfinite(top_p) and 0.0 < top_p <= 1.0):
            raise ServiceError(f"top_p must be in (0, 1], got {top_p}")

    # ---- preparation ---------------------------------------------------------------------------
    def _prepare_sync(self, prompt_ids: list[int], codes, link_text: str, link_options, max_tokens: int) -> Prepared:
        t0 = time.perf_counter()
        try:
            if codes is not None:
                if len(codes) > self.limits.max_codes:
                    raise ServiceError(f"codes: at most {self.limits.max_codes} per request, got {len(codes)}")
                resolved = self.resolver.explicit(codes)
            else:
                resolved = self.resolver.link(link_text, link_options)
        except CodeError as e:
            raise ServiceError(str(e), kind="unknown_code") from None
        t1 = time.perf_counter()
        prefix = self.builder.prefix_codes([c.code_id for c in resolved])
        for c in resolved:
            c.in_prefix = c.code_id in prefix
        n = len(prefix) * self.builder.tokens_per_code + len(prompt_ids)
        if n + max_tokens > self.max_model_len:
            raise ServiceError(f"prompt of {n} tokens (prefix included) + max_tokens {max_tokens} exceeds the "
                               f"context length {self.max_model_len}")
        try:
            row = self.builder.row(prompt_ids, prefix)
        except EmbeddingError as e:
            raise ServiceError(str(e), status=422, kind="invalid_embedding") from None
        t2 = time.perf_counter()
        return Prepared(row, resolved, prefix, int(row.shape[0]), t1 - t0, t2 - t1)

    async def prepare(self, prompt_ids, codes, link_text, link_options, max_tokens) -> Prepared:
        # CPU work (spaCy, torch) off the event loop, so other requests keep flowing
        p = await asyncio.to_thread(self._prepare_sync, prompt_ids, codes, link_text, link_options, max_tokens)
        if self.metrics is not None:
            self.metrics.stage.labels("link").observe(p.link_s)
            self.metrics.stage.labels("embed").observe(p.embed_s)
        return p

    def _observe_backend(self, seconds: float, gen=None) -> None:
        if self.metrics is not None:
            self.metrics.stage.labels("backend").observe(seconds)
            if gen is not None:
                self.metrics.tokens.inc(len(gen.token_ids))
                if gen.payload_bytes:
                    self.metrics.embed_bytes.observe(gen.payload_bytes)
                    self.metrics.stage.labels("encode").observe(gen.encode_s)

    async def run(self, coro):
        try:
            return await coro
        except BackendError as e:
            raise ServiceError(str(e), status=e.status, kind="backend_error") from None

    # ---- POST /v1/answer --------------------------------------------------------------------------
    async def answer(self, question, options=None, codes=None, scoring: str = "letter", max_tokens=None,
                     request_id: str = "-") -> dict:
        t0 = time.perf_counter()
        question = self.check_text("question", question, self.limits.max_question_chars)
        options = self.check_options(options)
        if scoring not in ("letter", "option"):
            raise ServiceError(f"scoring must be 'letter' or 'option', got {scoring!r}")
        if scoring == "option" and options is None:
            raise ServiceError("scoring='option' needs options")
        if options is not None:
            prompt_ids, n_new = self.builder.mc_prompt_ids(question, options), 1
        else:
            n_new = self.max_tokens(max_tokens)
            prompt_ids = self.builder.chat_prompt_ids([{"role": "user", "content": question}])
        p = await self.prepare(prompt_ids, codes, question, options, n_new)
        t1 = time.perf_counter()
        if options is not None and scoring == "option":
            scores = await self.run(self.backend.option_scores(question, options, p.prefix_codes))
            out = self._choice(options, scores, "option")
            gen = None
        elif options is not None:
            letters = self.builder.letter_ids(len(options))
            gen = await self.run(self.backend.generate(p.row, SamplingSpec(1, logprob_token_ids=letters), request_id))
            lp = gen.first_logprobs or {}
            out = self._choice(options, [lp.get(t, -math.inf) for t in letters], "letter")
        else:
            gen = await self.run(self.backend.generate(p.row, SamplingSpec(n_new), request_id))
            out = {"text": gen.text, "finish_reason": gen.finish_reason, "completion_tokens": len(gen.token_ids)}
        backend_s = time.perf_counter() - t1
        self._observe_backend(backend_s, gen)
        total = time.perf_counter() - t0
        log.info("answer codes=%s prefix=%s prompt_tokens=%d %s total_ms=%.1f", [c.code_id for c in p.codes],
                 p.prefix_codes, p.prompt_tokens, out.get("letter", ""), total * 1e3)
        return {"object": "answer", "model": self.served_name, "backend": self.backend.name, "answer": out,
                "codes": [c.to_dict() for c in p.codes], "prefix_codes": p.prefix_codes,
                "prompt_tokens": p.prompt_tokens,
                "timings": {"link_ms": round(p.link_s * 1e3, 2), "embed_ms": round(p.embed_s * 1e3, 2),
                            "backend_ms": round(backend_s * 1e3, 2), "total_ms": round(total * 1e3, 2)}}

    @staticmethod
    def _choice(options: list[str], scores: list[float], scoring: str) -> dict:
        best = max(range(len(options)), key=lambda i: (scores[i], -i))  # ties -> first, like argmax
        key = "logprobs" if scoring == "letter" else "option_scores"
        return {"letter": LETTERS[best], "index": best, "option": options[best], "scoring": scoring,
                key: {LETTERS[i]: (round(s, 6) if math.isfinite(s) else None) for i, s in enumerate(scores)}}

    # ---- OpenAI-style endpoints (shared by /v1/completions and /v1/chat/completions) ----------
    def chat_text(self, messages: list[dict]) -> str:
        """The text the linker reads in a chat: the user turns."""
        return "\n".join(m["content"] for m in messages if m["role"] == "user")

    async def prepare_openai(self, prompt_ids: list[int], link_text: str, codes, max_tokens) -> Prepared:
        return await self.prepare(prompt_ids, codes, link_text, None, max_tokens)

    async def generate(self, p: Prepared, spec: SamplingSpec, request_id: str):
        t0 = time.perf_counter()
        gen = await self.run(self.backend.generate(p.row, spec, request_id))
        self._observe_backend(time.perf_counter() - t0, gen)
        return gen

    async def stream(self, p: Prepared, spec: SamplingSpec, request_id: str):
        """Deltas from the backend; records TTFT and the backend time."""
        t0 = time.perf_counter()
        first, n = True, 0
        try:
            async for d in self.backend.stream(p.row, spec, request_id):
                if first and d.token_ids and self.metrics is not None:
                    self.metrics.ttft.observe(time.perf_counter() - t0)
                    first = False
                n += len(d.token_ids)
                yield d
        except BackendError as e:
            raise ServiceError(str(e), status=e.status, kind="backend_error") from None
        if self.metrics is not None:
            self.metrics.stage.labels("backend").observe(time.perf_counter() - t0)
            self.metrics.tokens.inc(n)
