"""`uld eval`: evaluation of any model (plain, peft, ULD, offset) on a task, with the field's
result files. TOFU: the options become an `EvalConfig` for `uld.eval.run.evaluate_model`;
muse / copyright: `uld.eval.text_tasks.evaluate_text_task`."""

from __future__ import annotations

from pathlib import Path

import typer

from uld.cli.app import app


@app.command("eval")
def eval_command(
    model: str = typer.Option(..., "--model", help="Model: hub id, model directory, peft adapter, ULD or run directory."),
    data: str = typer.Option(..., "--data", help="TOFU data: a local directory of splits or a hub id (locuslab/TOFU)."),
    out: Path = typer.Option(..., "--out", help="Directory for the result files (TOFU: TOFU_EVAL.json, TOFU_SUMMARY.json, TOFU_UNAVAILABLE.json)."),
    task: str = typer.Option("tofu", "--task", help="tofu, muse (MUSE_EVAL.json) or copyright (the ULD paper's Table 3 protocol)."),
    forget: str = typer.Option("forget10", "--forget", help="Forget split: forget01, forget05 or forget10."),
    reference: str | None = typer.Option(
        None, "--reference", help="Retain model's log (TOFU eval_log_aggregated.json, TOFU_EVAL.json or a uld eval dir)."
    ),
    reference_model: str | None = typer.Option(None, "--reference-model", help="Reference model for the mia_reference attack (e.g. the retain model)."),
    metrics: str = typer.Option("default", "--metrics", help="TOFU metrics: 'default', 'all', or names / groups separated by commas."),
    protocol: str = typer.Option("uld", "--protocol", help="Tokenisation rule: uld (answer's first token always scored) or openunlearning."),
    prompt_template: str | None = typer.Option(
        None, "--prompt-template", help="tofu, qa (OpenUnlearning's), or a template with {question}; default: the run's recorded one, else the chat template or tofu."
    ),
    answer_prefix: str | None = typer.Option(None, "--answer-prefix", help="Text put before the answer with a plain template (default: a space)."),
    max_items: int | None = typer.Option(None, "--max-items", help="First N items of each split (300 = the original TOFU protocol)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Sequences per forward pass / generation batch."),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", help="Greedy generation length (default: 200; muse: 128 for VerbMem)."),
    max_length: int | None = typer.Option(None, "--max-length", help="Longest scored sequence, in tokens (default: 512; muse, copyright: 2048)."),
    mia: bool = typer.Option(True, "--mia/--no-mia", help="Membership inference (forget vs holdout) and privleak."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)."),
    chat_template: bool = typer.Option(True, "--chat-template/--no-chat-template", help="Use the tokenizer's chat template when it has one."),
    assistant_weight: float | None = typer.Option(None, "--assistant-weight", help="ULD only (tofu): evaluate at this assistant weight instead of the run's saved one."),
) -> None:
    """Evaluate a model on TOFU (forget quality, model utility, truth ratios, ROUGE, MIA, memorisation), MUSE or the copyright protocol."""
    from uld.eval.checks import check_device, check_generation

    # settings every task shares are refused before any work
    if max_new_tokens is not None:
        check_generation(max_new_tokens)
    check_device(device)
    if task != "tofu":
        if assistant_weight is not None:
            from uld.errors import UldError

            raise UldError("--assistant-weight applies to --task tofu only")
        _text_task(task, model, data, out, reference, max_items, batch_size, max_new_tokens, max_length, device)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from uld.eval.config import EvalConfig
    from uld.eval.results import EVAL_FILE, SUMMARY_FILE, print_table
    from uld.eval.run import evaluate_model
    from uld.eval.tofu import unavailable_reasons

    config = EvalConfig(
        task=task, forget=forget, max_items=max_items, batch_size=batch_size, max_length=512 if max_length is None else max_length,
        max_new_tokens=200 if max_new_tokens is None else max_new_tokens, metrics=metrics, mia=mia, protocol=protocol,
        prompt_template=prompt_template, answer_prefix=answer_prefix, chat_template=chat_template, device=device,
        assistant_weight=assistant_weight,
    )
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    bar = Progress(*columns, console=console, transient=False)

    def progress(description: str, total: int):
        # the bar starts with the first scoring step, so errors found before any work stay one line
        if not bar.live.is_started:
            bar.start()
        t = bar.add_task(description, total=total)
        return lambda n: bar.advance(t, n)

    try:
        result, summary = evaluate_model(
            model, data, out, config, reference=reference, reference_model=reference_model, progress=progress,
            warn=lambda m: console.print(f"warning: {m}"), log=console.print,
        )
    finally:
        if bar.live.is_started:
            bar.stop()
    print_table(summary, Console(), title=f"TOFU {forget}: {model}", reasons=unavailable_reasons(result))
    console.print(f"wrote {out / EVAL_FILE} and {out / SUMMARY_FILE}")


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
