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
) -> None:
    """Measure training epoch time, decoding throughput and evaluation speed; ratios in one run."""
    import tempfile

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from uld.bench.perf import BENCHES, BenchSizes, run_benches, steps_of, to_markdown
    from uld.errors import UldError, unknown_choice
    from uld.io import atomic_dir, check_out

    if which not in WHICH:
        raise unknown_choice("benchmark", which, WHICH)
    if which == "all" and out is None:
        raise UldError("uld bench all needs --out DIR for bench.json and bench.md")
    if out is not None:
        check_out(out, {"--model": model, "--data": data})
    names = list(BENCHES) if which == "all" else [which]
    sizes = BenchSizes()
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="uld-bench-") as work:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console) as bar:
            task = bar.add_task(f"bench {which}", total=steps_of(names, sizes))
            res = run_benches(names, model, data, repeats, Path(work), sizes, step=lambda: bar.advance(task))
    md = to_markdown(res)
    if out is not None:
        import json

        with atomic_dir(out) as tmp:
            (tmp / "bench.json").write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
            (tmp / "bench.md").write_text(md, encoding="utf-8")
    table = Table(title=f"uld bench {which} (median of {repeats}; {res['machine']['device']}, "
                  f"{res['machine']['cpu_count']} CPUs)")
    for col in ("benchmark", "case", "value", "ratio"):
        table.add_column(col)
    for row in summary_rows(res):
        table.add_row(*row)
    Console().print(table)
    if out is not None:
        console.print(f"wrote {out / 'bench.json'} and {out / 'bench.md'}")


def summary_rows(res: dict) -> list[tuple[str, str, str, str]]:
    from uld.bench.perf import TRAIN_METHODS

    rows = []
    if "train" in res:
        t = res["train"]
        for m in TRAIN_METHODS:
            ratio = "1.00" if m == "uld" else f"ULD {t[f'speedup_vs_{m}']:.2f}x faster"
            rows.append(("train", m, f"{t[m]['epoch_seconds']:.2f} s/epoch, {t[m]['peak_mb']:.0f} MB", ratio))
    if "generate" in res:
        for key, row in res["generate"].items():
            if key.startswith("batch"):
                rows.append(("generate", f"batch {key[5:]}", f"target {row['target']['tokens_per_s']:.0f} tok/s, "
                             f"ULD {row['uld']['tokens_per_s']:.0f} tok/s", f"{row['throughput_ratio']:.2f}x"))
    if "eval" in res:
        e = res["eval"]
        batched = e[f"batch{e['batch_size']}"]
        rows.append(("eval", f"batch {e['batch_size']} vs 1", f"{batched['items_per_s']:.2f} vs "
                     f"{e['batch1']['items_per_s']:.2f} items/s (max diff {e['max_abs_diff']:.1e})", f"{e['speedup']:.2f}x"))
        for group, row in e.get("groups", {}).items():
            rows.append(("eval", group, f"{row['items_per_s']:.1f} items/s ({row['items']} items)", ""))
    return rows
