"""`uld aggregate`: the TOFU summary of an existing evaluation log, without a model."""

from __future__ import annotations

import typer

from uld.cli.app import app


@app.command("aggregate")
def aggregate_command(
    log: str = typer.Argument(..., help="Log to summarise: TOFU eval_log_aggregated.json, TOFU_EVAL.json, or a directory holding one."),
    reference: str | None = typer.Option(None, "--reference", help="Retain model's log, for forget quality and privleak."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout instead of a table."),
) -> None:
    """Compute forget quality, model utility and the other aggregates from per-item logs."""
    import json

    from rich.console import Console

    from uld.eval.reference import read_log
    from uld.eval.results import print_table
    from uld.eval.tofu import compute_metrics, summarize, unavailable_reasons
    from uld.io import _json_safe

    evaluated = read_log(log)
    ref = read_log(reference) if reference else None
    mia = {name: {"agg_value": auc} for name, auc in evaluated.mia_auc.items()}
    metrics = compute_metrics(evaluated.splits, mia or None, ref, forget_r=evaluated.forget_r)
    summary = summarize(metrics)
    reasons = unavailable_reasons(metrics)
    if as_json:
        # every metric, null where there is no value, and the reasons (TOFU_SUMMARY.json itself holds numbers only)
        shown: dict = {k: v.get("agg_value") for k, v in metrics.items()}
        print(json.dumps(_json_safe({**shown, "unavailable": reasons} if reasons else shown), indent=2))
    else:
        print_table(summary, Console(), title=f"TOFU summary: {log}", reasons=reasons)
