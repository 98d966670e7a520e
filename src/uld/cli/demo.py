"""`uld demo`: the miniature TOFU study end to end on a CPU (the study is `uld.studies.demo`)."""

from __future__ import annotations

from pathlib import Path

import typer

from uld.cli.app import app


@app.command("demo")
def demo(
    out: Path = typer.Option(Path("uld-demo"), "--out", help="Directory for results.json, REPORT.md and the plot."),
    cache: Path = typer.Option(Path(".uld-cache/mini"), "--cache", help="Pipeline cache (world, tokenizer, base, target, retain)."),
    seeds: int = typer.Option(1, "--seeds", help="Unlearning seeds per method (means reported)."),
    quick: bool = typer.Option(False, "--quick", help="A smaller world and fewer epochs (a minute or two)."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="Torch CPU threads (default: torch's choice; same count, same bits)."),
    no_audit: bool = typer.Option(False, "--no-audit", help="Skip `uld audit` of each method (the robustness table and plot)."),
    native_kernels: bool = typer.Option(False, "--native-kernels",
                                        help="Let MKL and ATen use the CPU's widest vector units (faster, not bit-reproducible across CPUs)."),
) -> None:
    """Run the miniature TOFU study: build/reuse the pipeline, unlearn forget10 with ULD, GA, GD, NPO, evaluate, audit."""
    from uld.repro import pin_cpu_kernels

    if not native_kernels:
        pin_cpu_kernels()  # before torch is imported, or MKL never reads it

    from rich.console import Console
    from rich.table import Table

    from uld.repro import deterministic
    from uld.studies.demo import COLUMNS, fmt, run_demo

    deterministic(threads)
    err = Console(stderr=True)
    results = run_demo(out, cache, seeds, quick, log=err.print, audit=not no_audit)
    table = Table(title="uld demo: forget10")
    table.add_column("model")
    for _, c in COLUMNS:
        table.add_column(c, justify="right")
    for name, r in results.items():
        table.add_row(name, *(fmt(r.get(k)) for k, _ in COLUMNS))
    Console().print(table)
