"""The miniature TOFU study behind `uld demo`, end to end on a CPU.

Builds (or reuses) the cached pipeline of `uld.studies.pipeline`, unlearns forget10 with ULD, GA,
GD and NPO, evaluates each with the retain model's log as the reference, audits each method's
seed-0 run with `uld audit` (`uld.studies.demo_audit`; off with `audit=False`), and writes
`results.json`, `REPORT.md`, `fq_vs_utility.png`, `robustness.png` and `audit/<method>/` into `--out`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

METHODS = ("uld", "ga", "gd", "npo")
ROWS = ("target", "retain", *METHODS)
PLOT_FILE = "fq_vs_utility.png"


def demo_settings(quick: bool) -> dict[str, Any]:
    """Pipeline config and unlearning recipes; `quick` is a smaller world and fewer epochs.

    Tuned on the default miniature (docs/benchmark.md, "uld demo"): every method unlearns with
    batch 8 (forget10 is 40 QA, so 5 optimiser steps an epoch) for 10 epochs; they
    share lr 2e-4, where they trade utility for forgetting (1e-4 barely moves the
    target, 3e-4 to 1e-3 wreck it). ULD's assistant (a trainable private copy of 2 of the 4
    blocks, lr 3e-3, batch 16) trains until it memorises forget10 (mean answer probability
    >= 0.9) or the cap of 60 epochs; with the paper's wrong-answer augmentation it plateaus
    near 0.4 and stops at the cap (docs/benchmark.md says why and what the alternative gives).
    """
    from uld.studies.demo_audit import demo_audit_settings
    from uld.studies.pipeline import ModelConfig, PipelineConfig
    from uld.world import WorldConfig

    if quick:
        pipe = PipelineConfig(world=WorldConfig(num_authors=20, qa_per_author=6), model=ModelConfig(hidden=64, intermediate=192),
                              pretrain_epochs=15, finetune_epochs=10)
        epochs, cap = 5, 15
    else:
        pipe = PipelineConfig()
        epochs, cap = 10, 60
    recipes = {
        "uld": {"lr": 3e-3, "epochs": cap, "batch_size": 16, "stop_forget_prob": 0.9, "num_layers": 2, "lora_rank": 0},
        "ga": {"lr": 2e-4, "epochs": epochs, "batch_size": 8},
        "gd": {"lr": 2e-4, "epochs": epochs, "batch_size": 8},
        "npo": {"lr": 2e-4, "epochs": epochs, "batch_size": 8},
    }
    return {"pipeline": pipe, "recipes": recipes, "audit": demo_audit_settings(quick, pipe.eval_max_new_tokens)}


def run_method(method: str, recipe: dict[str, Any], target: Path, data: Path, out: Path, seed: int, batch_size: int) -> Path:
    """One `uld unlearn` run (the Python function behind the command) into `out`."""
    from uld.train.config import make_config
    from uld.train.run import unlearn

    options: dict[str, Any] = {
        "data__source": str(data), "data__forget": "forget10", "data__retain": "retain90", "data__max_length": 128,
        "train__lr": recipe["lr"], "train__epochs": recipe["epochs"],
        "train__batch_size": recipe.get("batch_size", batch_size),
        "train__stop_forget_prob": recipe.get("stop_forget_prob"),
    }
    if method == "uld":
        options.update(policy__num_layers=recipe["num_layers"], policy__lora_rank=recipe["lora_rank"],
                       augment__source="file", augment__file=str(data / "augment_forget10.jsonl"))
        if "num_distractors" in recipe:
            options["augment__num_distractors"] = recipe["num_distractors"]
    cfg = make_config(model=str(target), method=method, seed=seed, **options)
    return unlearn(cfg, out)


def row_summary(metrics: dict[str, dict], seconds: float | None) -> dict[str, Any]:
    """The numbers the demo reports for one model."""
    def agg(name: str) -> float | None:
        v = metrics.get(name, {}).get("agg_value")
        return float(v) if isinstance(v, int | float) else None

    fq = agg("forget_quality")
    tr = metrics.get("forget_truth_ratio", {}).get("value_by_index") or {}
    scores = [v["score"] for v in tr.values() if isinstance(v, dict) and isinstance(v.get("score"), int | float)]
    return {
        "forget_quality": fq,
        "log10_forget_quality": math.log10(fq) if fq and fq > 0 else None,
        "model_utility": agg("model_utility"),
        "forget_rouge": agg("forget_Q_A_ROUGE"),
        "retain_rouge": agg("retain_Q_A_ROUGE"),
        "forget_prob": agg("forget_Q_A_Prob"),
        "forget_truth_ratio_median": statistics.median(scores) if scores else None,
        "train_seconds": seconds,
    }


def spread(rows: list[dict[str, Any]]) -> dict[str, dict[str, float] | None]:
    """Sample standard deviation, min and max of each number over seeds (None for one seed or a
    missing value); log10 FQ's spread is in log space."""
    out: dict[str, dict[str, float] | None] = {}
    for k in rows[0]:
        vals = [r[k] for r in rows]
        out[k] = None if len(vals) < 2 or any(v is None for v in vals) else {
            "sd": statistics.stdev(vals), "min": min(vals), "max": max(vals)}
    return out


def average(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean of each number over seeds (None when any seed lacks it); log10 FQ is averaged in log space."""
    out: dict[str, Any] = {}
    for k in rows[0]:
        vals = [r[k] for r in rows]
        out[k] = None if any(v is None for v in vals) else sum(vals) / len(vals)
    out["seeds"] = len(rows)
    return out


def fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float) and v != 0 and abs(v) < 1e-3:
        return f"{v:.2e}"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


COLUMNS = (("forget_quality", "FQ"), ("log10_forget_quality", "log10 FQ"), ("model_utility", "MU"),
           ("forget_rouge", "forget ROUGE"), ("retain_rouge", "retain ROUGE"), ("forget_prob", "forget prob"),
           ("forget_truth_ratio_median", "forget TR median"), ("train_seconds", "train s"))


def report_markdown(results: dict[str, dict], settings: dict[str, Any], seconds: dict[str, float], seeds: int,
                    per_seed: dict[str, list[dict]] | None = None, spreads: dict[str, dict] | None = None,
                    machine: dict[str, Any] | None = None) -> str:
    head = "| model | " + " | ".join(c for _, c in COLUMNS) + " |"
    lines = ["# uld demo: the miniature TOFU study", "",
             f"Forget set: forget10 of a synthetic world; {seeds} seed(s) per unlearning method (means shown).", "",
             head, "|" + "---|" * (len(COLUMNS) + 1)]
    for name, r in results.items():
        lines.append(f"| {name} | " + " | ".join(fmt(r.get(k)) for k, _ in COLUMNS) + " |")
    if per_seed and seeds > 1:
        lines += ["", "## Per seed", "", head.replace("| model |", "| model | seed |"), "|" + "---|" * (len(COLUMNS) + 2)]
        for name, rows in per_seed.items():
            for seed, r in enumerate(rows):
                lines.append(f"| {name} | {seed} | " + " | ".join(fmt(r.get(k)) for k, _ in COLUMNS) + " |")
    if spreads and seeds > 1:
        keys = [k for k, _ in COLUMNS if k != "train_seconds"]
        lines += ["", f"## Spread over {seeds} seeds (sample standard deviation; log10 FQ in log space)", "",
                  "| model | " + " | ".join(c for k, c in COLUMNS if k in keys) + " |", "|" + "---|" * (len(keys) + 1)]
        for name, sp in spreads.items():
            lines.append(f"| {name} | " + " | ".join(fmt(sp[k]["sd"]) if sp.get(k) else "n/a" for k in keys) + " |")
    if machine:
        env = ", ".join(f"{k}={v}" for k, v in machine.get("env", {}).items()) or "none"
        lines += ["", "## Machine", "",
                  f"- {machine.get('cpu')} ({machine.get('cpu_count')} CPUs; ATen kernels {machine.get('aten_cpu_capability')}), "
                  f"torch {machine.get('torch')} with {machine.get('torch_threads')} threads, {machine.get('platform')}.",
                  f"- Kernel environment: {env}; kernels pinned for cross-CPU reproducibility: {machine.get('kernels_pinned')}."]
    pipe = settings["pipeline"]
    lines += [
        "", "## Settings", "",
        f"- World: {pipe['world']['num_authors']} authors x {pipe['world']['qa_per_author']} QA (seed {pipe['world']['seed']}).",
        f"- Model: Llama, hidden {pipe['model']['hidden']}, {pipe['model']['layers']} layers, vocab {pipe['model']['vocab']} (own BPE).",
        f"- Base pretrained on `general` for {pipe['pretrain_epochs']} epochs (lr {pipe['pretrain_lr']}); target on full + general and "
        f"retain model on retain90 + general, each {pipe['finetune_epochs']} epochs (lr {pipe['finetune_lr']}) from the base"
        + ("; both also on 2 training paraphrases of each of their own answers (never the evaluation's)." if pipe.get("finetune_paraphrases") else "."),
        "- Unlearning: forget10 with retain90 as retain set; ULD's assistant on D'_f = forget + 2 paraphrases and "
        "D'_r = retain + 2 wrong answers per forget question (`augment_forget10.jsonl`, disjoint from the evaluation's).",
    ]
    for m, r in settings["recipes"].items():
        lines.append(f"- {m}: " + ", ".join(f"{k} {v}" for k, v in r.items()))
    lines.append("- Stage seconds (0 = reused from the cache): " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    lines += [
        "", "## What the numbers mean", "",
        "- FQ (forget quality): KS-test p-value between the forget truth ratios of the model and of the retain model; "
        "high (near 1) means indistinguishable from a model that never saw forget10. The target should be far below 0.05.",
        "- MU (model utility): harmonic mean of probability, ROUGE and truth ratio on retain, classic-author and world-fact "
        "QA; the retain model marks the ceiling a perfect unlearner could keep.",
        "- ROUGE: ROUGE-L recall of greedy answers; forget ROUGE should fall, retain ROUGE should stay.",
        "- These are tiny models on a tiny synthetic world: FQ's KS test on a few dozen items is coarse, and one seed "
        "is noisy. Read the table as a sanity check of the pipeline, not as a reproduction of the paper's numbers.",
    ]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, dict], path: Path) -> None:
    """FQ (log scale) against model utility, one point per model; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from uld.io import save_figure

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, r in results.items():
        fq, mu = r.get("forget_quality"), r.get("model_utility")
        if fq is None or mu is None:
            continue
        marker = {"target": "s", "retain": "*"}.get(name, "o")
        ax.scatter([mu], [max(fq, 1e-30)], marker=marker, s=120 if name == "retain" else 60, label=name)
        ax.annotate(name, (mu, max(fq, 1e-30)), textcoords="offset points", xytext=(5, 5))
    ax.set_yscale("log")
    ax.set_xlabel("model utility")
    ax.set_ylabel("forget quality (log scale)")
    ax.set_title("uld demo: forget10")
    ax.axhline(0.05, color="grey", linestyle=":", linewidth=1)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def run_demo(out: Path, cache: Path, seeds: int = 1, quick: bool = False, settings: dict[str, Any] | None = None,
             log: Callable[[str], None] = print, audit: bool = True) -> dict[str, dict]:
    """The study behind `uld demo`: one row per model (means over seeds), written to `out` as
    results.json, REPORT.md and the plots; `settings` (see `demo_settings`) overrides the built-in
    sizes; `audit` runs `uld audit` on each method's seed-0 run after its evaluation; `log`
    receives one line per stage."""
    import shutil
    import tempfile
    import time

    from uld.audit import AuditMemo
    from uld.audit.run import settings_dict, write_audit
    from uld.errors import UldError
    from uld.io import atomic_write_json, atomic_write_text, check_out
    from uld.repro import machine_info
    from uld.studies.demo_audit import (
        ROBUSTNESS_PLOT,
        audit_method,
        robustness_markdown,
        robustness_plot,
        summarize_audit,
    )
    from uld.studies.pipeline import build_pipeline

    if seeds < 1:
        raise UldError(f"--seeds must be at least 1, got {seeds}")
    check_out(out, {"--cache": cache})
    if cache.exists() and not cache.is_dir():
        raise UldError(f"--cache {str(cache)!r} is a file; give a directory")
    settings = settings or demo_settings(quick)
    t_start = time.time()
    pipe = build_pipeline(cache, settings["pipeline"], log=log)
    results: dict[str, dict] = {}
    work = Path(tempfile.mkdtemp(prefix=".uld-demo-", dir=cache))
    per_seed: dict[str, list[dict[str, Any]]] = {}  # each unlearning method's row per seed
    spreads: dict[str, dict[str, Any]] = {}
    audit_settings = settings.get("audit") if audit else None
    memo = AuditMemo()  # the target and retain model are probed once for all methods
    audits: dict[str, dict[str, Any]] = {}  # AUDIT.json of each method's seed-0 run
    try:
        for name, model in (("target", pipe.target), ("retain", pipe.retain)):
            log(f"demo: evaluating {name}")
            metrics = _eval(model, pipe, work / f"eval-{name}", settings["pipeline"].eval_max_new_tokens)
            results[name] = row_summary(metrics, None)
        for method in settings.get("methods", METHODS):
            rows = per_seed[method] = []
            for seed in range(seeds):
                log(f"demo: unlearning forget10 with {method} (seed {seed})")
                t0 = time.time()
                run = run_method(method, settings["recipes"][method], pipe.target, pipe.data, work / f"{method}-{seed}",
                                 seed, settings["pipeline"].batch_size)
                secs = time.time() - t0
                log(f"demo: evaluating {method} (seed {seed})")
                rows.append(row_summary(_eval(run, pipe, work / f"eval-{method}-{seed}", settings["pipeline"].eval_max_new_tokens), secs))
                if audit_settings is not None and seed == 0:
                    log(f"demo: auditing {method} (seed 0)")
                    audits[method] = audit_method(run, pipe, work / f"audit-{method}", audit_settings, memo, log)
            results[method] = average(rows)
            spreads[method] = spread(rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    pipe_secs = {k: round(v, 1) for k, v in pipe.seconds.items()}
    settings_out = {"pipeline": settings["pipeline"].to_dict(), "recipes": settings["recipes"],
                    "audit": settings_dict(audit_settings) if audit_settings is not None else None}
    robust = {m: summarize_audit(a) for m, a in audits.items()}
    total = time.time() - t_start
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    atomic_write_json(out / "results.json", {"results": results, "per_seed": per_seed, "spread": spreads, "machine": machine,
                                             "settings": settings_out, "seeds": seeds, "robustness": robust or None,
                                             "pipeline_seconds": pipe_secs, "pipeline_reused": pipe.reused,
                                             "total_seconds": round(total, 1)})
    report = report_markdown(results, settings_out, pipe_secs, seeds, per_seed, spreads, machine)
    if robust:
        report += robustness_markdown(robust, settings_out["audit"])
    atomic_write_text(out / "REPORT.md", report + f"\nTotal wall time of this run: {total:.0f} s.\n")
    plot(results, out / PLOT_FILE)
    for method, a in audits.items():
        write_audit(out / "audit" / method, a)
    if robust:
        robustness_plot(robust, out / ROBUSTNESS_PLOT)
    log(f"wrote {out / 'results.json'}, {out / 'REPORT.md'} and the plots in {total:.0f}s")
    return results


def _eval(model: Path, pipe, out: Path, max_new_tokens: int) -> dict[str, dict]:
    from uld.studies.pipeline import evaluate_model

    return evaluate_model(model, pipe.data, out, reference=pipe.reference, max_new_tokens=max_new_tokens)
