"""OpenAI's request and response shapes, as far as `uld serve` implements them.

Unknown request fields are ignored, as OpenAI-compatible servers do; known options that would
change the answer but are not implemented (n > 1, logprobs, penalties, tools, ...) are refused
with 400 rather than silently dropped. Errors have OpenAI's shape, `{"error": {"message", "type",
"param", "code"}}`, so the official clients raise their usual exceptions with the message.
"""

from __future__ import annotations

import json
from typing import Literal

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field

from uld.serve.engine import Completion

MAX_STOP_STRINGS = 4  # OpenAI's limit


class ApiError(Exception):
    """An error answered with an HTTP status and one sentence."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# -- request schemas -------------------------------------------------------------------------
class BaseRequest(BaseModel):
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


class ChatRequest(BaseRequest):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list | None = None
    response_format: dict | None = None


class CompletionRequest(BaseRequest):
    prompt: str | list[str]
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None
    logprobs: int | None = None


def refuse_unsupported(req: BaseRequest) -> None:
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


def stop_strings(stop: str | list[str] | None) -> tuple[str, ...]:
    items = [stop] if isinstance(stop, str) else list(stop or [])
    if len(items) > MAX_STOP_STRINGS:
        raise ApiError(400, f"stop takes at most {MAX_STOP_STRINGS} strings, got {len(items)}", param="stop")
    if any(not s for s in items):
        raise ApiError(400, "stop strings must not be empty", param="stop")
    return tuple(items)


# -- responses ----------------------------------------------------------------------------------
OBJECT = {("chat", False): "chat.completion", ("chat", True): "chat.completion.chunk",
           ("text", False): "text_completion", ("text", True): "text_completion"}


def usage(c: Completion) -> dict:
    return {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
            "total_tokens": c.prompt_tokens + c.completion_tokens}


def whole(kind: str, rid: str, created: int, model_id: str, c: Completion) -> dict:
    if kind == "chat":
        choice = {"index": 0, "message": {"role": "assistant", "content": c.text}, "logprobs": None,
                  "finish_reason": c.finish_reason}
    else:
        choice = {"index": 0, "text": c.text, "logprobs": None, "finish_reason": c.finish_reason}
    return {"id": rid, "object": OBJECT[kind, False], "created": created, "model": model_id,
            "choices": [choice], "usage": usage(c)}


def chat_chunk(rid, created, model_id, delta, finish_reason=None) -> dict:
    if isinstance(delta, str):
        delta = {"content": delta}
    return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model_id,
            "choices": [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish_reason}]}


def text_chunk(rid, created, model_id, text, finish_reason=None) -> dict:
    return {"id": rid, "object": "text_completion", "created": created, "model": model_id,
            "choices": [{"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}]}


def sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def validation_error(e: RequestValidationError) -> ApiError:
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
