"""`uld bench train|generate|eval|all`: performance of ULD against the alternatives (uld.bench.perf)."""

from __future__ import annotations

from pathlib import Path

import typer

from uld.cli.app import app

WHICH = ("train", "generate", "eval", "all")


@app.command("bench")
def bench_command(
    which: str = typer.Argument(..., help="train, generate, eval or all."),
    out: Path | None = typer.Option(None, "--out", help="Directory for bench.json and bench.md (required for all)."),
    model: str | None = typer.Option(None, "--model", help="Target model directory (default: the built-in miniature)."),
    data: str | None = typer.Option(None, "--data", help="TOFU-layout data directory (default: the built-in world)."),
    repeats: int = typer.Option(3, "--repeats", help="Repeats per case; the median is reported."),
    size: list[str] = typer.Option(
        [], "--size", help="KEY=VALUE override of a benchmark size, e.g. train_items=64 or gen_batches=1,16 (repeatable)."),
    openunlearning: str | None = typer.Option(
        None, "--openunlearning", help="OpenUnlearning's src directory: eval also times its TOFU evaluator on the same work."),
) -> None:
    """Measure training epoch time, decoding throughput and evaluation speed; ratios in one run."""
    import tempfile

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from uld.bench import perf
    from uld.bench.perf import BENCHES, run_benches, steps_of
    from uld.bench.report import summary_rows, write_report
    from uld.bench.workload import parse_sizes
    from uld.errors import UldError, unknown_choice
    from uld.io import check_out

    if which not in WHICH:
        raise unknown_choice("benchmark", which, WHICH)
    sizes = parse_sizes(size, perf.BenchSizes())  # a bad --size is refused before anything is written
    if which == "all" and out is None:
        raise UldError("uld bench all needs --out DIR for bench.json and bench.md")
    if out is not None:
        check_out(out, {"--model": model, "--data": data})
    names = list(BENCHES) if which == "all" else [which]
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="uld-bench-") as work:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console) as bar:
            task = bar.add_task(f"bench {which}", total=steps_of(names, sizes))
            res = run_benches(names, model, data, repeats, Path(work), sizes, step=lambda: bar.advance(task),
                              openunlearning=openunlearning)
    if out is not None:
        write_report(out, res)
    table = Table(title=f"uld bench {which} (median of {repeats}; {res['machine']['device']}, "
                  f"{res['machine']['cpu_count']} CPUs)")
    for col in ("benchmark", "case", "value", "ratio"):
        table.add_column(col)
    for row in summary_rows(res):
        table.add_row(*row)
    Console().print(table)
    skipped = res.get("eval", {}).get("openunlearning", {}).get("skipped")
    if skipped:
        console.print(skipped)
    if out is not None:
        console.print(f"wrote {out / 'bench.json'} and {out / 'bench.md'}")
