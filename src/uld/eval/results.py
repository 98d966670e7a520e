"""Result files (`TOFU_EVAL.json`, `TOFU_SUMMARY.json`, OpenUnlearning's layout) and the table.

`TOFU_EVAL.json`: `{metric: {"agg_value": float | null, "value_by_index": {index: {...}}}}` with
the per-item values (generations included in the `*_ROUGE` entries); a metric that could not be
computed has `"agg_value": null` and `"unavailable": "<reason>"`.
`TOFU_SUMMARY.json`: `{metric: agg_value}`, numbers only, as OpenUnlearning's (a metric without
a value is left out). `TOFU_UNAVAILABLE.json` beside it: `{metric: reason}` for those.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from uld.errors import UldError
from uld.eval.metrics import direction_of
from uld.eval.tofu import summarize, unavailable_reasons
from uld.io import write_json_files

EVAL_FILE = "TOFU_EVAL.json"
SUMMARY_FILE = "TOFU_SUMMARY.json"
UNAVAILABLE_FILE = "TOFU_UNAVAILABLE.json"
ARROWS = {"higher": "↑", "lower": "↓", "closer_to_zero": "→0", "closer_to_half": "→0.5"}
_FIRST = ("forget_quality", "model_utility")


def headline(task: str = "tofu") -> list[tuple[str, str]]:
    """(metric, label) rows of the result table, from the metric registry: forget quality and
    model utility first, then the other headline metrics in registry order."""
    from uld.eval.registry import metrics_of

    table = metrics_of(task)
    rows = [(n, table[n].label) for n in _FIRST if n in table]
    return rows + [(n, m.label) for n, m in table.items() if m.headline and n not in _FIRST]


def write_results(out_dir: str | Path, metrics: dict[str, dict]) -> dict[str, Any]:
    """Write the three files atomically (each through a temp file + rename); returns the summary."""
    summary = summarize(metrics)
    write_json_files(out_dir, {EVAL_FILE: metrics, SUMMARY_FILE: summary,
                               UNAVAILABLE_FILE: unavailable_reasons(metrics)})
    return summary


def read_results(path: str | Path) -> tuple[dict[str, dict], dict[str, Any] | None]:
    """Read `TOFU_EVAL.json` (and `TOFU_SUMMARY.json` next to it, when present)."""
    p = Path(path)
    eval_path = p / EVAL_FILE if p.is_dir() else p
    if not eval_path.is_file():
        raise UldError(f"no {EVAL_FILE} at {str(p)!r}")
    metrics = json.loads(eval_path.read_text(encoding="utf-8"))
    summary_path = eval_path.with_name(SUMMARY_FILE)
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else None
    return metrics, summary


def format_value(name: str, value: Any) -> str:
    if value is None:
        return "unavailable"
    if name == "forget_quality":
        log10 = f" (log10 {math.log10(value):.2f})" if value > 0 else ""
        return f"{value:.6g}{log10}"
    if name == "privleak":
        return f"{value:+.2f}"
    return f"{value:.4f}"


def print_table(summary: dict[str, Any], console=None, title: str = "TOFU evaluation",
                reasons: dict[str, str] | None = None, task: str = "tofu") -> None:
    """A rich table of the headline numbers; unavailable ones show their reason."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    reasons = reasons or {}
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("better", justify="center")
    table.add_column("value", justify="right")
    for name, label in headline(task):
        if name not in summary and name not in reasons:
            continue
        value = summary.get(name)
        shown = format_value(name, value) if value is not None else f"unavailable: {reasons.get(name, 'not computed')}"
        table.add_row(label, ARROWS.get(direction_of(name) or "", ""), shown)
    console.print(table)
