"""The OpenAI-compatible HTTP API, on FastAPI.

Routes: `POST /v1/chat/completions`, `POST /v1/completions` (both with `stream`), `GET /v1/models`,
`GET /v1/models/{id}`, and `GET /health` (no key needed, no model information).

Rules, in the order a request meets them:
1. with an API key set, every `/v1` request needs `Authorization: Bearer KEY` (else 401);
2. a body larger than `max_body_bytes` is refused before it is parsed (413);
3. the body must match the schema (else 400 naming the field); options this server does not
   implement (n > 1, logprobs, penalties, tools, ...) are refused with 400 rather than ignored;
4. `model` must be the served model's id (else 404): it is only compared, never opened;
5. a prompt longer than `max_prompt_tokens` or a `max_tokens` above the server's limit gets 413,
   a prompt plus `max_tokens` longer than the model's context 400;
6. when `max_concurrent` requests are already running or waiting, a new one gets 429.

Errors have OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, so the official
clients raise their usual exceptions with the message. Log lines carry sizes and timings only;
prompt and completion text are logged only with `log_prompts`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from uld.errors import UldError
from uld.serve.engine import Completion, Engine, SamplingParams

if TYPE_CHECKING:
    from uld.serve.server import ServeSettings

log = logging.getLogger("uld.serve")
MAX_STOP_STRINGS = 4  # OpenAI's limit
KEEPALIVE_SECONDS = 10.0  # while a streamed request waits in the queue


class ApiError(Exception):
    """An error answered with an HTTP status and one sentence."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# -- request schemas -------------------------------------------------------------------------
class _Request(BaseModel):
    """Fields both endpoints share. Unknown fields are ignored, as OpenAI-compatible servers do;
    known options that are not implemented are refused (see `_refuse_unsupported`)."""

    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0, description="Extension (as vLLM): sample among the k most likely tokens; 0 = off.")
    n: int = 1
    stream: bool = False
    stream_options: dict | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict | None = None
    ignore_eos: bool = Field(False, description="Extension (as vLLM): do not stop at the end-of-sequence token.")
    user: str | None = None


class _TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[_TextPart] | None = None

    def plain(self) -> dict:
        if isinstance(self.content, list):
            if any(p.type != "text" or p.text is None for p in self.content):
                raise ApiError(400, "only text content parts are supported", param="messages")
            content = "\n".join(p.text for p in self.content if p.text is not None)
        else:
            content = self.content or ""
        # "developer" is OpenAI's newer name for the system role; chat templates know "system".
        return {"role": "system" if self.role == "developer" else self.role, "content": content}


class ChatRequest(_Request):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list | None = None
    response_format: dict | None = None


class CompletionRequest(_Request):
    prompt: str | list[str]
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None
    logprobs: int | None = None


def _refuse_unsupported(req: _Request) -> None:
    """Options that would change the answer and that this server does not implement: 400."""
    bad = []
    if req.n != 1:
        bad.append(f"n={req.n} (one choice per request)")
    if getattr(req, "logprobs", None):
        bad.append("logprobs")
    if getattr(req, "top_logprobs", None):
        bad.append("top_logprobs")
    if req.presence_penalty or req.frequency_penalty:
        bad.append("presence_penalty / frequency_penalty")
    if req.logit_bias:
        bad.append("logit_bias")
    if getattr(req, "tools", None):
        bad.append("tools")
    fmt = getattr(req, "response_format", None)
    if fmt and fmt.get("type", "text") != "text":
        bad.append(f"response_format {fmt.get('type')!r}")
    if getattr(req, "echo", False):
        bad.append("echo")
    if (getattr(req, "best_of", None) or 1) > 1:
        bad.append("best_of")
    if getattr(req, "suffix", None):
        bad.append("suffix")
    if bad:
        raise ApiError(400, f"not supported by this server: {', '.join(bad)}")


def _stop_strings(stop: str | list[str] | None) -> tuple[str, ...]:
    items = [stop] if isinstance(stop, str) else list(stop or [])
    if len(items) > MAX_STOP_STRINGS:
        raise ApiError(400, f"stop takes at most {MAX_STOP_STRINGS} strings, got {len(items)}", param="stop")
    if any(not s for s in items):
        raise ApiError(400, "stop strings must not be empty", param="stop")
    return tuple(items)


# -- the application -----------------------------------------------------------------------------
class _Slots:
    """How many requests are running or waiting; refuses past the limit."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0
        self._lock = threading.Lock()

    def take(self) -> None:
        with self._lock:
            if self.used >= self.limit:
                raise ApiError(
                    429,
                    f"the server is busy: {self.used} requests are running or waiting (limit "
                    f"{self.limit}); retry later",
                    type_="rate_limit_error",
                    code="too_many_requests",
                )
            self.used += 1

    def give(self, *_: Any) -> None:
        with self._lock:
            self.used -= 1


def create_app(engine: Engine, settings: ServeSettings) -> FastAPI:
    """The FastAPI application serving `engine` under `settings`' limits and key."""
    app = FastAPI(title="uld serve", docs_url=None, redoc_url=None, openapi_url=None)
    slots = _Slots(settings.max_concurrent)
    app.state.engine, app.state.slots, app.state.settings = engine, slots, settings
    app.add_middleware(_Guard, api_key=settings.api_key, max_body_bytes=settings.max_body_bytes)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, e: ApiError):
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError):
        return JSONResponse(_validation_error(e).body(), status_code=400)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [_model_card(engine)]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str):
        _check_model(engine, model_id)
        return _model_card(engine)

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest):
        _refuse_unsupported(req)
        _check_model(engine, req.model)
        messages = [m.plain() for m in req.messages]
        try:
            prompt_ids = await asyncio.to_thread(engine.chat_prompt_ids, messages)
        except UldError as e:
            raise ApiError(400, str(e), param="messages") from None
        max_tokens = req.max_completion_tokens or req.max_tokens
        params = _params(req, engine, settings, prompt_ids, max_tokens, default=settings.max_tokens)
        prompt_log = messages if settings.log_prompts else None
        return await _respond(engine, slots, settings, "chat", req, prompt_ids, params, prompt_log)

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest):
        _refuse_unsupported(req)
        _check_model(engine, req.model)
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if len(prompts) != 1:
            raise ApiError(400, f"prompt must be one string, got a list of {len(prompts)}", param="prompt")
        prompt_ids = await asyncio.to_thread(engine.text_prompt_ids, prompts[0])
        params = _params(req, engine, settings, prompt_ids, req.max_tokens, default=16)  # OpenAI's default
        prompt_log = prompts[0] if settings.log_prompts else None
        return await _respond(engine, slots, settings, "text", req, prompt_ids, params, prompt_log)

    return app


def _model_card(engine: Engine) -> dict:
    return {"id": engine.model_id, "object": "model", "created": 0, "owned_by": "uld"}


def _check_model(engine: Engine, name: str) -> None:
    # The requested name is compared with the served id and nothing else: never opened as a path.
    if name != engine.model_id:
        raise ApiError(
            404,
            f"model {name!r} is not served here; this server serves {engine.model_id!r}",
            param="model",
            code="model_not_found",
        )


def _params(req: _Request, engine: Engine, settings: ServeSettings, prompt_ids: list[int],
            max_tokens: int | None, default: int) -> SamplingParams:
    n_prompt = len(prompt_ids)
    if n_prompt > settings.max_prompt_tokens:
        raise ApiError(
            413,
            f"the prompt has {n_prompt} tokens; this server accepts at most {settings.max_prompt_tokens}",
            code="prompt_too_long",
        )
    if max_tokens is not None and max_tokens > settings.max_tokens:
        raise ApiError(
            413,
            f"max_tokens={max_tokens} exceeds this server's limit of {settings.max_tokens}",
            param="max_tokens",
            code="max_tokens_too_large",
        )
    ctx = engine.context_length
    room = ctx - n_prompt if ctx else None
    if room is not None and room < 1:
        raise ApiError(400, f"the prompt has {n_prompt} tokens, which fills this model's context of {ctx}",
                       code="context_length_exceeded")
    if max_tokens is None:
        max_tokens = min(default, room) if room is not None else default
    elif room is not None and max_tokens > room:
        raise ApiError(
            400,
            f"this model's context is {ctx} tokens: the prompt ({n_prompt}) plus max_tokens "
            f"({max_tokens}) exceeds it",
            param="max_tokens",
            code="context_length_exceeded",
        )
    temperature = 1.0 if req.temperature is None else req.temperature  # OpenAI's default
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        top_k=req.top_k or 0,
        seed=req.seed,
        stop=_stop_strings(req.stop),
        ignore_eos=req.ignore_eos,
    )


async def _respond(engine, slots, settings, kind, req, prompt_ids, params, prompt_log):
    """Queue the request on the engine and answer it whole or as a stream of server-sent events."""
    slots.take()
    rid = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex
    created = int(time.time())
    if not req.stream:
        future = engine.submit(prompt_ids, params)
        future.add_done_callback(slots.give)
        try:
            result = await asyncio.wrap_future(future)
        except UldError as e:
            raise ApiError(400, str(e)) from None
        except Exception as e:
            log.exception("generation failed")
            raise ApiError(500, f"generation failed: {type(e).__name__}: {e}", type_="server_error") from None
        _log(rid, kind, result, prompt_log)
        return _whole(kind, rid, created, engine.model_id, result)

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    cancel = threading.Event()

    def put(item) -> None:  # called on the worker thread
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the event loop has closed (server shutting down)
            cancel.set()

    def done(future) -> None:
        slots.give()
        if future.cancelled():  # the worker was shut down before the request ran
            put(("error", UldError("the server is shutting down")))
            return
        exc = future.exception()
        put(("error", exc) if exc is not None else ("done", future.result()))

    future = engine.submit(prompt_ids, params, on_text=lambda t: put(("text", t)), cancel=cancel)
    future.add_done_callback(done)
    include_usage = bool((req.stream_options or {}).get("include_usage"))
    chunk = _chat_chunk if kind == "chat" else _text_chunk

    async def events():
        try:
            if kind == "chat":
                yield _sse(_chat_chunk(rid, created, engine.model_id, {"role": "assistant", "content": ""}))
            while True:
                try:
                    what, value = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:  # a comment line keeps proxies open and finds a gone client
                    yield ": keep-alive\n\n"
                    continue
                if what == "text":
                    yield _sse(chunk(rid, created, engine.model_id, value))
                elif what == "done":
                    _log(rid, kind, value, prompt_log)
                    yield _sse(chunk(rid, created, engine.model_id, None, value.finish_reason))
                    if include_usage:
                        yield _sse({"id": rid, "object": _OBJECT[kind, True], "created": created,
                                    "model": engine.model_id, "choices": [], "usage": _usage(value)})
                    yield "data: [DONE]\n\n"
                    return
                else:
                    message = str(value) if isinstance(value, UldError) else f"generation failed: {type(value).__name__}: {value}"
                    log.error("%s: %s", rid, message)
                    yield _sse(ApiError(500, message, type_="server_error").body())
                    return
        finally:
            cancel.set()  # the client went away, or the stream ended: stop decoding at the next token

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


_OBJECT = {("chat", False): "chat.completion", ("chat", True): "chat.completion.chunk",
           ("text", False): "text_completion", ("text", True): "text_completion"}


def _usage(c: Completion) -> dict:
    return {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
            "total_tokens": c.prompt_tokens + c.completion_tokens}


def _whole(kind: str, rid: str, created: int, model_id: str, c: Completion) -> dict:
    if kind == "chat":
        choice = {"index": 0, "message": {"role": "assistant", "content": c.text}, "logprobs": None,
                  "finish_reason": c.finish_reason}
    else:
        choice = {"index": 0, "text": c.text, "logprobs": None, "finish_reason": c.finish_reason}
    return {"id": rid, "object": _OBJECT[kind, False], "created": created, "model": model_id,
            "choices": [choice], "usage": _usage(c)}


def _chat_chunk(rid, created, model_id, delta, finish_reason=None) -> dict:
    if isinstance(delta, str):
        delta = {"content": delta}
    return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model_id,
            "choices": [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish_reason}]}


def _text_chunk(rid, created, model_id, text, finish_reason=None) -> dict:
    return {"id": rid, "object": "text_completion", "created": created, "model": model_id,
            "choices": [{"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}]}


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def _log(rid: str, kind: str, c: Completion, prompt_log) -> None:
    log.info("%s %s: %d prompt + %d completion tokens, finish=%s, %.2fs", rid, kind, c.prompt_tokens,
             c.completion_tokens, c.finish_reason, c.seconds)
    if prompt_log is not None:
        log.info("%s prompt=%s completion=%s", rid, json.dumps(prompt_log, ensure_ascii=False),
                 json.dumps(c.text, ensure_ascii=False))


def _validation_error(e: RequestValidationError) -> ApiError:
    errors = e.errors()
    if not errors:
        return ApiError(400, "the request body is not valid")
    first = errors[0]
    loc = [str(x) for x in first.get("loc", ()) if x != "body"]
    where = ".".join(loc)
    if first.get("type") == "json_invalid":
        return ApiError(400, "the request body is not valid JSON")
    msg = first.get("msg", "invalid value")
    return ApiError(400, f"{where}: {msg}" if where else msg, param=where or None)


# -- the guard: API key and body size, before anything is parsed -----------------------------------
class _Guard:
    """Pure ASGI middleware: checks the API key on `/v1` and reads the body up to a limit."""

    def __init__(self, app, api_key: str | None, max_body_bytes: int):
        self.app, self.api_key, self.max_body_bytes = app, api_key, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self.api_key and scope["path"].startswith("/v1"):
            given = headers.get(b"authorization", b"").decode("latin-1")
            token = given[7:].strip() if given[:7].lower() == "bearer " else ""
            if not hmac.compare_digest(token.encode("utf-8"), self.api_key.encode("utf-8")):
                why = "a wrong API key" if token else "no API key"
                err = ApiError(401, f"{why}: send 'Authorization: Bearer <key>' with the server's API key",
                               code="invalid_api_key")
                return await _send_error(send, err, {b"www-authenticate": b"Bearer"})
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        too_big = ApiError(413, f"the request body exceeds this server's limit of {self.max_body_bytes} bytes",
                           code="request_too_large")
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return await _send_error(send, too_big)
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                return await _send_error(send, too_big)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()  # later calls wait for the client's disconnect, as usual

        return await self.app(scope, replay, send)


async def _send_error(send, err: ApiError, extra: dict | None = None) -> None:
    payload = json.dumps(err.body()).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    headers += list((extra or {}).items())
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
