"""`uld export`: copy a ULD run directory, as a self-contained bundle or referring to its target."""

from __future__ import annotations

import typer

from uld.cli.app import app


@app.command("export")
def export_command(
    run: str = typer.Argument(..., help="The ULD run directory to export."),
    out: str = typer.Argument(..., help="A new directory to write (must not exist)."),
    bundle: bool = typer.Option(False, "--bundle", help="Copy the target into OUT/target: a directory that loads anywhere, alone."),
    target: str | None = typer.Option(None, "--target", help="The target to use instead of the one recorded in the run."),
    ignore_target_mismatch: bool = typer.Option(False, "--ignore-target-mismatch", help="Accept a target whose fingerprint differs from the recorded one."),
) -> None:
    """Write RUN to OUT; with --bundle, include the target so that OUT is self-contained."""
    from rich.console import Console

    from uld.models.uld.io import export_run

    with Console(stderr=True).status(f"exporting {run} to {out}"):
        path = export_run(run, out, bundle=bundle, target=target, ignore_target_mismatch=ignore_target_mismatch)
    print(f"wrote {path}" + (" (with its target)" if bundle else ""))
