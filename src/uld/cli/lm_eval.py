"""`uld lm-eval`: run lm-evaluation-harness tasks on a ULD run or any causal LM."""

from __future__ import annotations

from pathlib import Path

import typer

from uld.cli.app import app


@app.command("lm-eval")
def lm_eval_command(
    model: str = typer.Option(..., "--model", help="A ULD run directory, a transformers model directory or hub id, or a peft adapter."),
    tasks: str = typer.Option(..., "--tasks", help="Comma-separated lm-eval task, group or tag names."),
    include_path: Path | None = typer.Option(None, "--include-path", help="A directory of your own lm-eval task YAML files."),
    num_fewshot: int | None = typer.Option(None, "--num-fewshot", help="Few-shot examples per prompt (default: each task's own)."),
    limit: float | None = typer.Option(None, "--limit", help="Evaluate only this many documents per task (or this fraction, if < 1)."),
    batch_size: int = typer.Option(1, "--batch-size", help="Requests per forward pass."),
    apply_chat_template: bool = typer.Option(False, "--apply-chat-template", help="Wrap prompts in the tokenizer's chat template."),
    log_samples: bool = typer.Option(False, "--log-samples", help="Keep every document's inputs and scores in the results file."),
    seed: int | None = typer.Option(None, "--seed", help="Seed for lm-eval's random, numpy, torch and few-shot sampling (default: lm-eval's)."),
    out: Path | None = typer.Option(None, "--out", help="Write lm-eval's results as JSON to this file."),
    device: str | None = typer.Option(None, "--device", help="Torch device, e.g. cuda (default: cpu)."),
    dtype: str | None = typer.Option(None, "--dtype", help="Load the weights in this dtype, e.g. bfloat16 (default: as saved)."),
) -> None:
    """Evaluate the model with lm-eval's own evaluator and print its table."""
    from rich.console import Console

    from uld.errors import UldError

    names = [t.strip() for t in tasks.split(",") if t.strip()]
    if batch_size < 1:
        raise UldError(f"--batch-size must be at least 1, got {batch_size}")
    if limit is not None and limit <= 0:
        raise UldError(f"--limit must be > 0, got {limit}")
    if num_fewshot is not None and num_fewshot < 0:
        raise UldError(f"--num-fewshot must be >= 0, got {num_fewshot}")
    from uld.serve import lm_eval as bridge

    bridge._require_lm_eval()
    err = Console(stderr=True)
    with err.status("indexing lm-eval's tasks"):
        manager = bridge.task_manager(include_path, names)
        bridge.check_tasks(manager, names)
    with err.status(f"loading {model}"):
        from uld.models.loading import load_model

        m, tok = load_model(model, device=device, dtype=dtype)
    results = bridge.evaluate(
        m, tok, names, manager=manager, num_fewshot=num_fewshot,
        limit=int(limit) if limit is not None and limit >= 1 else limit, batch_size=batch_size,
        log_samples=log_samples, apply_chat_template=apply_chat_template, seed=seed,
    )
    if results is None:  # lm-eval returns None on ranks other than 0
        return
    if out is not None:
        from uld.io import atomic_write_text

        atomic_write_text(out, bridge.results_json(results))
        err.print(f"results written to {out}")
    print(bridge.results_table(results))
