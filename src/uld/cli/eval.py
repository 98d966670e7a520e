"""`uld eval`: TOFU evaluation of any model (plain, peft, ULD), with the field's result files."""

from __future__ import annotations

from pathlib import Path

import typer

from uld.cli.app import app
from uld.models.loading import resolve_model_path


@app.command("eval")
def eval_command(
    model: str = typer.Option(..., "--model", help="Model: hub id, model directory, peft adapter, ULD or run directory."),
    data: str = typer.Option(..., "--data", help="TOFU data: a local directory of splits or a hub id (locuslab/TOFU)."),
    out: Path = typer.Option(..., "--out", help="Directory for TOFU_EVAL.json and TOFU_SUMMARY.json."),
    task: str = typer.Option("tofu", "--task", help="tofu, muse (MUSE_EVAL.json) or copyright (the ULD paper's Table 3 protocol)."),
    forget: str = typer.Option("forget10", "--forget", help="Forget split: forget01, forget05 or forget10."),
    reference: str | None = typer.Option(
        None, "--reference", help="Retain model's log (TOFU eval_log_aggregated.json, TOFU_EVAL.json or a uld eval dir)."
    ),
    max_items: int | None = typer.Option(None, "--max-items", help="First N items of each split (300 = the original TOFU protocol)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Sequences per forward pass / generation batch."),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", help="Greedy generation length (default: 200; muse: 128 for VerbMem)."),
    max_length: int | None = typer.Option(None, "--max-length", help="Longest scored sequence, in tokens (default: 512; muse, copyright: 2048)."),
    mia: bool = typer.Option(True, "--mia/--no-mia", help="Membership inference (forget vs holdout) and privleak."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)."),
    chat_template: bool = typer.Option(True, "--chat-template/--no-chat-template", help="Use the tokenizer's chat template when it has one."),
) -> None:
    """Evaluate a model on TOFU (forget quality, model utility, truth ratios, ROUGE, MIA), MUSE or the copyright protocol."""
    if task != "tofu":
        _text_task(task, model, data, out, reference, max_items, batch_size, max_new_tokens, max_length, device)
        return
    max_new_tokens = 200 if max_new_tokens is None else max_new_tokens
    max_length = 512 if max_length is None else max_length
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from uld.data.prompts import PromptFormat
    from uld.errors import UldError
    from uld.eval.reference import read_log
    from uld.eval.results import print_table, write_results
    from uld.eval.tofu import check_reference, evaluate, load_tofu_data

    if batch_size < 1:
        raise UldError(f"--batch-size must be at least 1, got {batch_size}")
    if out.exists() and not out.is_dir():
        raise UldError(f"--out {str(out)!r} is a file; give a directory")
    console = Console(stderr=True)
    # Everything that can fail on bad input is checked before the model runs and before any file.
    tofu = load_tofu_data(data, forget, max_items=max_items, mia=mia)
    ref = read_log(reference) if reference else None
    if ref is not None:
        check_reference(ref, [r["answer"] for r in tofu.records["forget"]], forget)

    import torch

    from uld.eval.scoring import CausalLMScorer
    from uld.models.loading import load_model

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    with console.status(f"loading {model}"):
        lm, tokenizer = load_model(resolve_model_path(model), device=device)
    scorer = CausalLMScorer(
        lm, tokenizer, PromptFormat(use_chat_template=chat_template), batch_size=batch_size, max_length=max_length, device=device
    )
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:

        def progress(description: str, total: int):
            task = bar.add_task(description, total=total)
            return lambda n: bar.advance(task, n)

        metrics = evaluate(scorer, tofu, reference=ref, max_new_tokens=max_new_tokens, mia=mia, progress=progress)
    summary = write_results(out, metrics)
    print_table(summary, Console(), title=f"TOFU {forget}: {model}")
    console.print(f"wrote {out / 'TOFU_EVAL.json'} and {out / 'TOFU_SUMMARY.json'}")


def _text_task(task, model, data, out, reference, max_items, batch_size, max_new_tokens, max_length, device) -> None:
    """`--task muse|copyright`: `uld.eval.text_tasks.evaluate_text_task`, a progress bar, the table."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from uld.eval.text_tasks import evaluate_text_task

    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:

        def progress(description: str, total: int):
            t = bar.add_task(description, total=total)
            return lambda n: bar.advance(t, n)

        _, summary, path = evaluate_text_task(task, model, data, out, reference, batch_size, max_length or 2048, max_items,
                                              max_new_tokens, device, progress)
    table = Table(title=f"{task}: {model}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in summary.items():
        table.add_row(name, f"{value:.4f}")
    Console().print(table)
    console.print(f"wrote {path} and its summary")
