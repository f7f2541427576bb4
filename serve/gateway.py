"""The HTTP gateway (FastAPI): the service's API, request ids, API key, limits, metrics.

    POST /v1/answer              {question, options?, codes?, scoring?, max_tokens?}
    POST /v1/completions         OpenAI completions (one string prompt) + `codes`; streaming
    POST /v1/chat/completions    OpenAI chat + `codes`; streaming
    GET  /health                 liveness + backend reachability (never needs the API key)
    GET  /v1/models              the served adapter: base model, adapter, MedTok checkpoint, versions
    GET  /metrics                Prometheus

`codes` given (even []) skip the linker; omitted, the linker reads the question/prompt/user turns.
Clients never send embeddings: nothing received is unpickled or deserialized beyond JSON.
Every response carries `X-Request-ID` (and `request_id` in JSON bodies); every log line too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
import uuid
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve.admission import Admission, Overloaded
from serve.backends.base import SamplingSpec
from serve.logs import REQUEST_ID, valid_request_id
from serve.metrics import CONTENT_TYPE_LATEST, GatewayMetrics
from serve.schemas import AnswerRequest, ChatRequest, CompletionRequest, OpenAIParams
from serve.service import QAService, ServiceError

log = logging.getLogger("medtok.serve")
ENDPOINTS = ("/v1/answer", "/v1/completions", "/v1/chat/completions", "/health", "/v1/models", "/metrics")
OPEN_PATHS = ("/health",)


# ---- middleware: request id, API key, body size, access log + metrics ------------------------
class GatewayMiddleware:
    def __init__(self, app, *, api_key: str | None, max_body_bytes: int, metrics: GatewayMetrics):
        self.app, self.api_key, self.max_body, self.metrics = app, api_key, max_body_bytes, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        given = headers.get("x-request-id", "")
        rid = given if valid_request_id(given) else uuid.uuid4().hex
        token = REQUEST_ID.set(rid)
        scope.setdefault("state", {})["request_id"] = rid
        path = scope["path"]
        endpoint = path if path in ENDPOINTS else "other"
        t0, status = time.perf_counter(), [500]

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = list(message.get("headers", [])) + [(b"x-request-id", rid.encode())]
            await send(message)

        try:
            if self.api_key and path not in OPEN_PATHS and not self._authorized(headers):
                return await _send_json(send_with_id, 401, _error_body("missing or wrong API key "
                                        "(Authorization: Bearer <key>)", "authentication_error", 401, rid))
            length = headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_body):
                return await _send_json(send_with_id, 413, _error_body(
                    f"request body over {self.max_body} bytes", "request_too_large", 413, rid))
            received = [0]

            async def counted_receive():
                message = await receive()
                if message["type"] == "http.request":
                    received[0] += len(message.get("body", b""))
                    if received[0] > self.max_body:  # chunked bodies without a Content-Length
                        raise StarletteHTTPException(413, f"request body over {self.max_body} bytes")
                return message

            started = [False]

            async def send_tracked(message):
                started[0] = started[0] or message["type"] == "http.response.start"
                await send_with_id(message)

            try:
                await self.app(scope, counted_receive, send_tracked)
            except Exception:  # a bug, not a client error: log it with the request id, answer 500
                log.exception("internal error")
                if not started[0]:
                    await _send_json(send_with_id, 500, _error_body(
                        "internal error (see the server log for this request id)", "internal_error", 500, rid))
        finally:
            dt = time.perf_counter() - t0
            self.metrics.requests.labels(endpoint, str(status[0])).inc()
            if endpoint not in ("/metrics", "/health"):
                self.metrics.latency.labels(endpoint).observe(dt)
            if status[0] >= 400:
                self.metrics.errors.labels(endpoint, str(status[0])).inc()
            log.info("%s %s %d %.1f ms", scope["method"], path, status[0], dt * 1e3)
            REQUEST_ID.reset(token)

    def _authorized(self, headers: dict) -> bool:
        auth = headers.get("authorization", "")
        given = auth[7:] if auth.lower().startswith("bearer ") else headers.get("x-api-key", "")
        return hmac.compare_digest(given.encode(), self.api_key.encode())


def _error_body(message: str, kind: str, status: int, rid: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "code": status}, "request_id": rid or REQUEST_ID.get()}


async def _send_json(send, status: int, body: dict, headers: list | None = None) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
                + (headers or [])})
    await send({"type": "http.response.body", "body": data})


def _sse(obj) -> bytes:
    return f"data: {json.dumps(obj)}\n\n".encode()


# ---- helpers the routes share (the app's state holds the service, admission and metrics) -------
def _service(request: Request) -> QAService:
    return request.app.state.service


async def bounded(request: Request, coro):
    """Admission slot + whole-request timeout around one non-streaming request."""
    limits, admission = request.app.state.service.limits, request.app.state.admission

    async def run():
        async with admission.slot():
            return await coro
    try:
        return await asyncio.wait_for(run(), limits.request_timeout_s)
    except asyncio.TimeoutError:
        raise ServiceError(f"request took longer than {limits.request_timeout_s:g} s", 504, "timeout") from None


def check_model(service: QAService, name: str | None) -> None:
    if name is not None and name != service.served_name:
        raise ServiceError(f"model {name!r} is not served here; available: {service.served_name!r}", 404,
                           "model_not_found")


def spec_of(service: QAService, req: OpenAIParams, max_tokens) -> SamplingSpec:
    if req.n != 1:
        raise ServiceError("n must be 1 (one completion per request)")
    if req.logprobs not in (None, False, 0):
        raise ServiceError("logprobs are not offered here; POST /v1/answer returns the option letters' "
                           "log-probabilities")
    service.check_sampling(req.temperature, req.top_p)
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stop) > 4 or any(not s or len(s) > 64 for s in stop):
        raise ServiceError("stop: at most 4 non-empty strings of at most 64 characters")
    return SamplingSpec(max_tokens, req.temperature, req.top_p, req.seed, stop, None, req.ignore_eos)


def completion_response(kind: str, rid: str, created: int, model: str, text: str, ids: list[int], finish,
                        *, stream: bool, first: bool = False, **extra) -> dict:
    """The one builder of OpenAI completion bodies: chat or text completion, whole or one
    streamed chunk (`first` chunk: the assistant role), with `extra` fields after `choices`."""
    if kind == "chat" and stream:
        delta = {"role": "assistant", "content": text} if first else ({"content": text} if text else {})
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "token_ids": ids}
        obj = "chat.completion.chunk"
    elif kind == "chat":
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish,
                  "token_ids": ids}
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None, "token_ids": ids}
        obj = "text_completion"
    return {"id": f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{rid}", "object": obj, "created": created,
            "model": model, "choices": [choice], **extra}


async def openai_completion(request: Request, req, prompt_ids, link_text, max_tokens, kind: str):
    """A completion or chat request after its own checks: whole, or streamed as server-sent events."""
    service, admission = _service(request), request.app.state.admission
    limits = service.limits
    spec = spec_of(service, req, max_tokens)
    rid, created = REQUEST_ID.get(), int(time.time())
    if not req.stream:
        async def once():
            p = await service.prepare_openai(prompt_ids, link_text, req.codes, max_tokens)
            return p, await service.generate(p, spec, rid)
        p, gen = await bounded(request, once())
        usage = {"prompt_tokens": p.prompt_tokens, "completion_tokens": len(gen.token_ids),
                 "total_tokens": p.prompt_tokens + len(gen.token_ids)}
        return completion_response(kind, rid, created, service.served_name, gen.text, gen.token_ids,
                                   gen.finish_reason, stream=False, usage=usage,
                                   codes=[c.to_dict() for c in p.codes], prefix_codes=p.prefix_codes,
                                   request_id=rid)
    # streaming: the slot is held until the stream ends (or the client goes away)
    stack = contextlib.AsyncExitStack()
    deadline = time.monotonic() + limits.request_timeout_s
    try:
        await asyncio.wait_for(stack.enter_async_context(admission.slot()), limits.queue_timeout_s + 1)
        p = await service.prepare_openai(prompt_ids, link_text, req.codes, max_tokens)
    except BaseException:
        await stack.aclose()
        raise

    async def events():
        token = REQUEST_ID.set(rid)
        try:
            yield _sse(completion_response(kind, rid, created, service.served_name, "", [], None, stream=True,
                                           first=True, codes=[x.to_dict() for x in p.codes],
                                           prefix_codes=p.prefix_codes, request_id=rid))
            async for d in service.stream(p, spec, rid):
                if time.monotonic() > deadline:
                    yield _sse(_error_body(f"request took longer than {limits.request_timeout_s:g} s",
                                           "timeout", 504, rid))
                    break
                yield _sse(completion_response(kind, rid, created, service.served_name, d.text, d.token_ids,
                                               d.finish_reason, stream=True))
            yield b"data: [DONE]\n\n"
        except ServiceError as e:
            yield _sse(_error_body(str(e), e.kind, e.status, rid))
        finally:
            await stack.aclose()
            REQUEST_ID.reset(token)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Request-ID": rid})


# ---- errors: one JSON shape, OpenAI-style, never echoing the (possibly huge) input ------------
async def _service_error(request, exc: ServiceError):
    return JSONResponse(_error_body(str(exc), exc.kind, exc.status), status_code=exc.status)


async def _overloaded(request, exc: Overloaded):
    return JSONResponse(_error_body(str(exc), "overloaded", exc.status), status_code=exc.status,
                        headers={"Retry-After": str(exc.retry_after_s)})


async def _invalid(request, exc: RequestValidationError):
    errs = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errs):
        return JSONResponse(_error_body("malformed JSON body", "invalid_request_error", 400), status_code=400)
    parts = [f"{'.'.join(str(x) for x in e.get('loc', ())[1:]) or 'body'}: {e.get('msg')}" for e in errs[:5]]
    return JSONResponse(_error_body("; ".join(parts)[:1000], "invalid_request_error", 422), status_code=422)


async def _http(request, exc: StarletteHTTPException):
    return JSONResponse(_error_body(str(exc.detail), "invalid_request_error", exc.status_code),
                        status_code=exc.status_code)


EXCEPTION_HANDLERS = {ServiceError: _service_error, Overloaded: _overloaded, RequestValidationError: _invalid,
                      StarletteHTTPException: _http}

# ---- endpoints ---------------------------------------------------------------------------------
router = APIRouter()


@router.get("/health")
async def health(request: Request):
    service = _service(request)
    ok = await service.backend.health()
    return JSONResponse({"status": "ok" if ok else "backend unavailable", "backend": service.backend.name},
                        status_code=200 if ok else 503)


@router.get("/metrics")
async def prometheus(request: Request):
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/models")
async def models(request: Request):
    service = _service(request)
    b = service.bundle
    card = {"id": service.served_name, "object": "model", "created": int(time.time()), "owned_by": "medtok",
            "root": str(b.base_dir), "parent": b["base_model"], "max_model_len": service.max_model_len,
            "base_model": b["base_model"], "adapter": str(b.adapter_dir), "arm": b["arm"],
            "medtok_checkpoint": b["medtok_checkpoint"], "vector_source": b["vector_source"],
            "uses_prefix": b["uses_prefix"], "max_codes": b["max_codes"], "tokens_per_code": b["tokens_per_code"],
            "dtype": b["dtype"], "embed_dtype": service.config.embed_dtype,
            "backend": service.backend.info(), "versions": b["versions"],
            "linker": service.resolver.linker is not None, "limits": service.limits.to_dict()}
    return {"object": "list", "data": [card], "request_id": REQUEST_ID.get()}


@router.post("/v1/answer")
async def answer(req: AnswerRequest, request: Request):
    service = _service(request)
    check_model(service, req.model)
    out = await bounded(request, service.answer(req.question, req.options, req.codes, req.scoring, req.max_tokens,
                                                REQUEST_ID.get()))
    return {"id": f"ans-{REQUEST_ID.get()}", "request_id": REQUEST_ID.get(), **out}


@router.post("/v1/completions")
async def completions(req: CompletionRequest, request: Request):
    service = _service(request)
    check_model(service, req.model)
    if req.echo:
        raise ServiceError("echo is not supported with prompt embeddings")
    prompt = service.check_text("prompt", req.prompt, service.limits.max_question_chars)
    max_tokens = service.max_tokens(req.max_tokens)
    return await openai_completion(request, req, service.builder.text_prompt_ids(prompt), prompt, max_tokens,
                                   "completion")


@router.post("/v1/chat/completions")
async def chat(req: ChatRequest, request: Request):
    service = _service(request)
    limits = service.limits
    check_model(service, req.model)
    if len(req.messages) > limits.max_messages:
        raise ServiceError(f"messages: at most {limits.max_messages}, got {len(req.messages)}")
    messages = [{"role": m.role, "content": m.text()} for m in req.messages]
    service.check_text("messages", "\n".join(m["content"] for m in messages) or " ", limits.max_question_chars)
    if not any(m["role"] == "user" and m["content"].strip() for m in messages):
        raise ServiceError("messages: no non-empty user message")
    max_tokens = service.max_tokens(req.max_completion_tokens if req.max_completion_tokens is not None
                                    else req.max_tokens)
    return await openai_completion(request, req, service.builder.chat_prompt_ids(messages),
                                   service.chat_text(messages), max_tokens, "chat")


def create_app(service: QAService, metrics: GatewayMetrics | None = None) -> FastAPI:
    """The FastAPI app around a ready `QAService` (its backend already started): the routes of
    `router`, the error handlers, and the middleware (request id, API key, body size, metrics)."""
    metrics = metrics or service.metrics or GatewayMetrics()
    service.metrics = metrics
    limits = service.limits
    app = FastAPI(title="MedTok QA gateway", docs_url=None, redoc_url=None, openapi_url=None,
                  exception_handlers=EXCEPTION_HANDLERS)
    app.state.service, app.state.metrics = service, metrics
    app.state.admission = Admission(limits.max_concurrency, limits.max_queue, limits.queue_timeout_s, metrics)
    app.add_middleware(GatewayMiddleware, api_key=service.config.api_key, max_body_bytes=limits.max_body_bytes,
                       metrics=metrics)
    app.include_router(router)
    return app
