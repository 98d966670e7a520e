"""`uld study muse`: the miniature copyrighted-text study (MUSE's table and the ULD paper's
Table 3 columns) on synthetic books; the work is `uld.studies.muse.run_muse_study`."""

from __future__ import annotations

from pathlib import Path

import typer

from uld.cli.app import app

STUDIES = ("muse",)


@app.command("study")
def study(
    name: str = typer.Argument(..., help="Study to run: muse."),
    out: Path = typer.Option(Path("uld-study-muse"), "--out", help="Directory for results.json and REPORT.md."),
    cache: Path = typer.Option(Path(".uld-cache/muse"), "--cache", help="Cache of the books, tokenizer, target and retain model."),
    seeds: int = typer.Option(1, "--seeds", help="Unlearning seeds per method (means and standard deviations reported)."),
    methods: str = typer.Option("all", "--methods", help="Comma-separated methods (uld, ga, gd, npo, npo_gd, simnpo, rmu) or 'all'."),
) -> None:
    """Run a built-in study end to end on the CPU: `muse` = synthetic books, target and retain
    model, ULD against GA, GD, NPO, NPO+GD, SimNPO and RMU, evaluated with MUSE and the copyright protocol."""
    from rich.console import Console
    from rich.table import Table

    from uld.errors import unknown_choice
    from uld.studies.muse import COLUMNS, METHODS, _fmt, run_muse_study

    if name not in STUDIES:
        raise unknown_choice("study", name, STUDIES)
    chosen = METHODS if methods == "all" else tuple(m.strip() for m in methods.split(",") if m.strip())
    console = Console(stderr=True)
    results = run_muse_study(out, cache, seeds, chosen, log=console.print)
    table = Table(title="uld study muse")
    table.add_column("model")
    for _, c in COLUMNS:
        table.add_column(c, justify="right")
    for model, r in results.items():
        table.add_row(model, *(_fmt(r.get(k)) for k, _ in COLUMNS))
    Console().print(table)
    console.print(f"wrote {out / 'results.json'} and {out / 'REPORT.md'}")
