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

Request and response shapes are in `schemas.py`, the key and size checks in `guard.py`. Log lines carry sizes and timings only;
prompt and completion text are logged only with `log_prompts`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse

from uld.errors import UldError
from uld.serve.engine import Completion, Engine, SamplingParams
from uld.serve.guard import Guard
from uld.serve.schemas import (
    OBJECT,
    ApiError,
    BaseRequest,
    ChatRequest,
    CompletionRequest,
    chat_chunk,
    refuse_unsupported,
    sse,
    stop_strings,
    text_chunk,
    usage,
    validation_error,
    whole,
)

if TYPE_CHECKING:
    from uld.serve.server import ServeSettings

log = logging.getLogger("uld.serve")
KEEPALIVE_SECONDS = 10.0  # while a streamed request waits in the queue


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
    app.add_middleware(Guard, api_key=settings.api_key, max_body_bytes=settings.max_body_bytes)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, e: ApiError):
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError):
        return JSONResponse(validation_error(e).body(), status_code=400)

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
        refuse_unsupported(req)
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
        refuse_unsupported(req)
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


def _params(req: BaseRequest, engine: Engine, settings: ServeSettings, prompt_ids: list[int],
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
        stop=stop_strings(req.stop),
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
        return whole(kind, rid, created, engine.model_id, result)

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
    chunk = chat_chunk if kind == "chat" else text_chunk

    async def events():
        try:
            if kind == "chat":
                yield sse(chat_chunk(rid, created, engine.model_id, {"role": "assistant", "content": ""}))
            while True:
                try:
                    what, value = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:  # a comment line keeps proxies open and finds a gone client
                    yield ": keep-alive\n\n"
                    continue
                if what == "text":
                    yield sse(chunk(rid, created, engine.model_id, value))
                elif what == "done":
                    _log(rid, kind, value, prompt_log)
                    yield sse(chunk(rid, created, engine.model_id, None, value.finish_reason))
                    if include_usage:
                        yield sse({"id": rid, "object": OBJECT[kind, True], "created": created,
                                    "model": engine.model_id, "choices": [], "usage": usage(value)})
                    yield "data: [DONE]\n\n"
                    return
                else:
                    message = str(value) if isinstance(value, UldError) else f"generation failed: {type(value).__name__}: {value}"
                    log.error("%s: %s", rid, message)
                    yield sse(ApiError(500, message, type_="server_error").body())
                    return
        finally:
            cancel.set()  # the client went away, or the stream ended: stop decoding at the next token

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _log(rid: str, kind: str, c: Completion, prompt_log) -> None:
    log.info("%s %s: %d prompt + %d completion tokens, finish=%s, %.2fs", rid, kind, c.prompt_tokens,
             c.completion_tokens, c.finish_reason, c.seconds)
    if prompt_log is not None:
        log.info("%s prompt=%s completion=%s", rid, json.dumps(prompt_log, ensure_ascii=False),
                 json.dumps(c.text, ensure_ascii=False))
