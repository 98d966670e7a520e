"""`uld serve`: an OpenAI-compatible HTTP API for a ULD run or any causal LM."""

from __future__ import annotations

import typer

from uld.cli.app import app


@app.command("serve")
def serve_command(
    model: str = typer.Option(..., "--model", help="A ULD run directory, a transformers model directory or hub id, or a peft adapter."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; anything but loopback needs an API key."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    api_key: str | None = typer.Option(None, "--api-key", help="Require 'Authorization: Bearer KEY' on every /v1 request (default: $ULD_API_KEY)."),
    served_model_name: str | None = typer.Option(None, "--served-model-name", help="The model id clients use (default: the directory's name)."),
    max_prompt_tokens: int = typer.Option(4096, "--max-prompt-tokens", help="Longest prompt accepted, in tokens (413 beyond)."),
    max_tokens: int = typer.Option(512, "--max-tokens", help="Most new tokens one request may ask for (413 beyond); the default for chat requests."),
    max_concurrent: int = typer.Option(8, "--max-concurrent", help="Requests running or waiting at once (429 beyond); they run one at a time."),
    log_prompts: bool = typer.Option(False, "--log-prompts", help="Also log prompt and completion text (default: sizes and timings only)."),
    device: str | None = typer.Option(None, "--device", help="Torch device, e.g. cuda (default: cpu)."),
    dtype: str | None = typer.Option(None, "--dtype", help="Load the weights in this dtype, e.g. bfloat16 (default: as saved)."),
) -> None:
    """Serve /v1/chat/completions, /v1/completions and /v1/models until interrupted."""
    import logging

    from rich.console import Console

    from uld.device import resolve_device
    from uld.errors import UldError

    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UldError("uld serve needs FastAPI and uvicorn: pip install 'uld[serve]'") from None
    from uld.serve.server import ServeSettings, api_key_from_env, load_engine, serve

    # Checked before the model loads, so a refused address fails at once.
    settings = ServeSettings(
        host=host, port=port, api_key=api_key_from_env(api_key), max_prompt_tokens=max_prompt_tokens,
        max_tokens=max_tokens, max_concurrent=max_concurrent, log_prompts=log_prompts,
    )
    device = resolve_device(device) if device else None
    err = Console(stderr=True)
    with err.status(f"loading {model}"):
        engine = load_engine(model, served_model_name=served_model_name, device=device, dtype=dtype)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    shown = f"[{host}]" if ":" in host else host
    err.print(
        f"serving {engine.model_id!r} at http://{shown}:{port}/v1 "
        f"(API key {'required' if settings.api_key else 'not required: loopback only'}; "
        f"context {engine.context_length or 'unknown'} tokens)"
    )
    serve(engine, settings)
