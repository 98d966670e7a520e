"""Checks made before a request body is parsed: the API key and the body's size.

A pure ASGI middleware, so a refused request costs no parsing: with an API key set, every `/v1`
request needs `Authorization: Bearer KEY` (401 otherwise, compared in constant time); a body
larger than the limit, declared or chunked, gets 413 once the limit is passed.
"""

from __future__ import annotations

import hmac
import json

from uld.serve.schemas import ApiError


class Guard:
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
