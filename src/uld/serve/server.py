"""Settings of `uld serve`, the loopback / API-key rule, and running the app under uvicorn.

Secure by default: the server binds 127.0.0.1; it refuses any non-loopback address unless an API
key is set (`--api-key` or the `ULD_API_KEY` environment variable), and then every `/v1` request
must carry it.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from uld.errors import UldError

API_KEY_ENV = "ULD_API_KEY"
log = logging.getLogger("uld.serve")


@dataclass
class ServeSettings:
    """Where to listen and what to accept.

    host / port: the address to bind (default loopback only). api_key: required on every `/v1`
    request when set; mandatory for a non-loopback host. max_prompt_tokens: longest prompt (413
    beyond). max_tokens: most new tokens one request may ask for (413 beyond) and the default for
    chat requests that do not say. max_concurrent: requests running or waiting at once (429
    beyond; they run one at a time). max_body_bytes: largest request body (413 beyond, checked
    before parsing). log_prompts: also log prompt and completion text (off: sizes and timings only).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_prompt_tokens: int = 4096
    max_tokens: int = 512
    max_concurrent: int = 8
    max_body_bytes: int = 1 << 20
    log_prompts: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise UldError(f"--port must be in 0..65535, got {self.port}")
        for name in ("max_prompt_tokens", "max_tokens", "max_concurrent", "max_body_bytes"):
            value = getattr(self, name)
            if value < 1:
                raise UldError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.api_key is not None and not self.api_key.strip():
            raise UldError("the API key is empty: give a non-empty --api-key or unset it")
        check_bind(self.host, self.api_key)


def is_loopback(host: str) -> bool:
    """True for `localhost` and addresses in 127.0.0.0/8 or ::1; False for every other name."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # any other host name may resolve to a public address


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to listen beyond this machine without an API key."""
    if not is_loopback(host) and not api_key:
        raise UldError(
            f"refusing to bind {host!r} without an API key: anyone who can reach it could use the "
            f"model; pass --api-key or set {API_KEY_ENV}, or bind 127.0.0.1"
        )


def load_engine(model: str, served_model_name: str | None = None, device: str | None = None,
                dtype: str | None = None):
    """Load a ULD run directory or any causal LM (directory or hub id) into an `Engine`.

    The model's id defaults to the directory's name (a hub id is kept as given), so clients do not
    learn the server's paths.
    """
    from uld.models.loading import load_model
    from uld.serve.engine import Engine

    m, tok = load_model(model, device=device, dtype=dtype)
    name = served_model_name or (Path(model).resolve().name if Path(model).exists() else model)
    return Engine(m, tok, model_id=name)


def create_app(engine, settings: ServeSettings):
    """The FastAPI app for `engine` (checks the bind rule again: settings may have been changed)."""
    from uld.serve.openai_api import create_app as _create

    check_bind(settings.host, settings.api_key)
    return _create(engine, settings)


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on (host, port); one sentence when the address cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as e:
        sock.close()
        raise UldError(f"cannot listen on {host}:{port}: {e.strerror or e} (is another server using that port?)") from None
    return sock


def serve(engine, settings: ServeSettings) -> None:
    """Run the server in the foreground until interrupted (Ctrl-C)."""
    import uvicorn

    sock = bind(settings.host, settings.port)
    config = uvicorn.Config(create_app(engine, settings), log_level="info", timeout_graceful_shutdown=5,
                            lifespan="off")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


class BackgroundServer:
    """The server on a background thread, for tests and for embedding: `with BackgroundServer(...)
    as srv: ... srv.url ...`. Port 0 picks a free port (the socket is bound before the thread starts,
    so there is no race for it)."""

    def __init__(self, engine, settings: ServeSettings, start_timeout: float = 60.0):
        import uvicorn

        self.settings = settings
        self._sock = bind(settings.host, settings.port)
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(create_app(engine, settings), log_config=None, access_log=False,
                                timeout_graceful_shutdown=5, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="uld-serve-http", daemon=True)
        self._start_timeout = start_timeout

    @property
    def url(self) -> str:
        host = f"[{self.settings.host}]" if ":" in self.settings.host else self.settings.host
        return f"http://{host}:{self.port}"

    def start(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + self._start_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        self._sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def api_key_from_env(given: str | None) -> str | None:
    """`--api-key` when given, else the `ULD_API_KEY` environment variable, else None."""
    return given if given is not None else (os.environ.get(API_KEY_ENV) or None)
