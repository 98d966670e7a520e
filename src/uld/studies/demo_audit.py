"""The robustness part of `uld demo`: `uld audit` of each method's seed-0 run, one table, one plot.

Every unlearned model is audited (`uld.audit.run_audit`) against the pipeline's target (the
scale's top: recovery 1) and its retain model (the floor, and forget quality's reference under
the same attack). One `AuditMemo` is shared across the methods, so the target and the retain
model are probed once, not once per method. The summary keeps, per method and probe variant,
the recovery ratios and the unlearned model's forget-side measures; docs/audit.md defines them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from uld.audit import AuditMemo, AuditSettings, run_audit

ROBUSTNESS_PLOT = "robustness.png"
MEASURES = ("prob", "rouge", "leak", "forget_quality")


def demo_audit_settings(quick: bool, max_new_tokens: int) -> AuditSettings:
    """The audit's own defaults (docs/audit.md) with the demo's answer length; `quick` samples 3
    answers a question, relearns for 10 steps and quantises to 4 bits only."""
    if quick:
        return AuditSettings(max_new_tokens=max_new_tokens, leak_k=3, relearn_steps=10, bits=(4,))
    return AuditSettings(max_new_tokens=max_new_tokens)


def audit_method(run: Path, pipe, out: Path, settings: AuditSettings, memo: AuditMemo, log) -> dict[str, Any]:
    """`uld audit` of one unlearned run on forget10, the retain model as reference; AUDIT.json's content."""
    return run_audit(str(run), str(pipe.data), "forget10", out, settings, reference=str(pipe.retain),
                     target=str(pipe.target), log=log, memo=memo)


def variants(audit: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """("probe/variant", entry) in AUDIT.json's order, the plain questions first."""
    out = [("plain", {"unlearned": audit["plain"]["unlearned"], "target": audit["plain"]["target"],
                      "retain": audit["plain"].get("retain"), "recovery": {"prob": 0.0, "rouge": 0.0, "leak": 0.0}})]
    for probe, vs in audit["probes"].items():
        out += [(f"{probe}/{name}", entry) for name, entry in vs.items()]
    return out


def _pick(entry: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if not entry else {k: entry.get(k) for k in MEASURES}


def summarize_audit(audit: dict[str, Any]) -> dict[str, Any]:
    """Per probe variant: recovery ratios and the forget-side measures of the unlearned model (and,
    for scale, of the target and the retain model under the same attack); None where it did not run."""
    rows: dict[str, Any] = {}
    for key, e in variants(audit):
        if e.get("unavailable"):
            rows[key] = {"unavailable": e["unavailable"]}
            continue
        rows[key] = {"recovery": e.get("recovery"), "unlearned": _pick(e.get("unlearned")),
                     "target": _pick(e.get("target")), "retain": _pick(e.get("retain"))}
    return {"variants": rows, "seconds": audit.get("total_seconds"), "cpu_seconds": audit.get("cpu_seconds"),
            "reused": audit.get("reused", 0)}


def headline(key: str) -> str:
    """The measure a variant is read by: leak for leak@k (sampling leaves the probabilities
    alone), ROUGE-L recall of the greedy answer elsewhere."""
    return "leak" if key.startswith("sampling/") else "rouge"


def _f(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float) and v != 0 and abs(v) < 1e-3:
        return f"{v:.1e}"
    return f"{v:.2f}"


def robustness_markdown(robust: dict[str, dict[str, Any]], settings: dict[str, Any]) -> str:
    """REPORT.md's robustness section: recovery ratios, then the measures, method x probe."""
    methods = list(robust)
    keys = list(next(iter(robust.values()))["variants"]) if robust else []
    lines = ["", "## Robustness: `uld audit` of each method (seed 0)", "",
             "Each unlearned model under each probe of `uld audit` (docs/audit.md), with the target as the top of the "
             "scale and the retain model as the floor. Recovery = (probe value - unlearned plain value) / (target plain "
             "value - unlearned plain value): 0 = the forgetting held, 1 = back to the target. Relearning is measured on "
             "the forget items the attacker did not train on. Settings: "
             + ", ".join(f"{k} {settings[k]}" for k in ("leak_k", "temperature", "leak_threshold", "bits", "group_size",
                                                         "relearn_steps", "relearn_fraction", "relearn_lr", "relearn_rank")) + ".",
             "", "### Recovery ratio: answer probability / ROUGE-L recall (leak@k: leak rate)", "",
             "| probe | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]
    for key in keys:
        if key == "plain":  # 0 by definition
            continue
        cells = []
        for m in methods:
            row = robust[m]["variants"].get(key) or {}
            rec = row.get("recovery")
            if row.get("unavailable") or not rec:
                cells.append("n/a")
            elif key.startswith("sampling/"):
                cells.append(_f(rec.get("leak")))
            else:
                cells.append(f"{_f(rec.get('prob'))} / {_f(rec.get('rouge'))}")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines += ["", "### Forget-side measures: answer probability / ROUGE-L recall / forget quality (leak@k: leak rate)", "",
              "| probe | " + " | ".join(methods) + " | target | retain model |", "|---|" + "---:|" * (len(methods) + 2)]
    first = robust[methods[0]]["variants"] if methods else {}
    for key in keys:
        cells = []
        for who in (*methods, "target", "retain"):
            row = (robust[who]["variants"].get(key) if who in robust else first.get(key)) or {}
            values = row.get("unlearned" if who in robust else who)
            if row.get("unavailable") or not values:
                cells.append("n/a")
            elif key.startswith("sampling/"):
                cells.append(_f(values.get("leak")))
            elif who in robust:
                cells.append(f"{_f(values.get('prob'))} / {_f(values.get('rouge'))} / {_f(values.get('forget_quality'))}")
            else:
                cells.append(f"{_f(values.get('prob'))} / {_f(values.get('rouge'))}")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    secs = ", ".join(f"{m} {robust[m].get('seconds')} ({robust[m].get('cpu_seconds')} CPU)" for m in methods)
    lines += ["", f"Audit wall seconds per method, with the CPU time of all threads (the target and retain model are "
              f"probed with the first method and reused by the others): {secs}. Each method's AUDIT.json and AUDIT.md are in `audit/<method>/`; the heat map of "
              f"recovery is `{ROBUSTNESS_PLOT}`."]
    return "\n".join(lines) + "\n"


def robustness_plot(robust: dict[str, dict[str, Any]], path: Path) -> None:
    """Heat map of the recovery ratio (ROUGE-L recall; leak rate for leak@k), method x probe;
    written atomically. Colours are clipped to [0, 1]; the cells give the exact values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from uld.io import save_figure

    methods = list(robust)
    keys = [k for k in next(iter(robust.values()))["variants"] if k != "plain"]
    grid = np.full((len(methods), len(keys)), np.nan)
    for i, m in enumerate(methods):
        for j, k in enumerate(keys):
            rec = (robust[m]["variants"].get(k) or {}).get("recovery")
            if rec and rec.get(headline(k)) is not None:
                grid[i, j] = rec[headline(k)]
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(keys), 1.2 + 0.5 * len(methods)))
    ax.imshow(np.clip(grid, 0, 1), cmap="RdYlGn_r", vmin=0, vmax=1, aspect="auto")
    for i in range(len(methods)):
        for j in range(len(keys)):
            ax.text(j, i, "n/a" if np.isnan(grid[i, j]) else f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(keys)), [k.replace("/", "\n") for k in keys], fontsize=7)
    ax.set_yticks(range(len(methods)), methods)
    ax.set_title("recovery of ROUGE-L recall (leak@k: leak rate); 0 = forgetting held, 1 = back to the target", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
