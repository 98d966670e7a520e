"""`uld study muse|tofu`: end-to-end studies (the work is in `uld.studies`).

- `muse`: the miniature copyrighted-text study (MUSE's table and the ULD paper's Table 3 columns)
  on synthetic books (`uld.studies.muse.run_muse_study`);
- `tofu`: the real-model TOFU study on any target and TOFU-format data (`uld.studies.tofu.run_study`).
"""

from __future__ import annotations

from pathlib import Path

import typer

from uld.cli.app import app

study_app = typer.Typer(help="End-to-end studies: muse (synthetic books), tofu (a real model on TOFU).", no_args_is_help=True)
app.add_typer(study_app, name="study")


@study_app.command("muse")
def study(
    out: Path = typer.Option(Path("uld-study-muse"), "--out", help="Directory for results.json and REPORT.md."),
    cache: Path = typer.Option(Path(".uld-cache/muse"), "--cache", help="Cache of the books, tokenizer, target and retain model."),
    seeds: int = typer.Option(1, "--seeds", help="Unlearning seeds per method (means and standard deviations reported)."),
    methods: str = typer.Option("all", "--methods", help="Comma-separated methods (uld, ga, gd, npo, npo_gd, simnpo, rmu) or 'all'."),
) -> None:
    """The miniature copyrighted-text study end to end on the CPU: synthetic books, target and retain
    model, ULD against GA, GD, NPO, NPO+GD, SimNPO and RMU, evaluated with MUSE and the copyright protocol."""
    from rich.console import Console
    from rich.table import Table

    from uld.studies.muse import COLUMNS, METHODS, _fmt, run_muse_study

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


@study_app.command("tofu")
def tofu_command(
    model: str | None = typer.Option(None, "--model", help="The pretrained model: hub id, model directory or .gguf file."),
    data: str | None = typer.Option(None, "--data", help="TOFU data: a directory of TOFU-schema splits or a hub id (locuslab/TOFU)."),
    out: Path = typer.Option(Path("uld-study"), "--out", help="Directory for results.json, REPORT.md and the plot."),
    cache: Path = typer.Option(Path(".uld-cache/study"), "--cache", help="Stage cache (data, target, retain model, runs, evaluations)."),
    quick: bool = typer.Option(False, "--quick", help="2 retain + 1 forget author, 10 QA each, one recipe per method, one seed."),
    seeds: int = typer.Option(1, "--seeds", help="Unlearning seeds per setting (means reported)."),
    chosen_seeds: int | None = typer.Option(
        None, "--chosen-seeds", help="Seeds for the chosen setting of ULD and of the best baseline (default 3; 1 with --quick)."),
    methods: str = typer.Option("", "--methods", help="Comma-separated methods or variants to run (default: all), e.g. uld,npo_gd."),
    retain_authors: int | None = typer.Option(None, "--retain-authors", help="Retain authors (the first of TOFU's full)."),
    forget_authors: int | None = typer.Option(None, "--forget-authors", help="Forget authors (the last of TOFU's full)."),
    qa_per_author: int | None = typer.Option(None, "--qa-per-author", help="QA pairs per author (TOFU: 20)."),
    general_items: int | None = typer.Option(None, "--general-items", help="Real-author / world-fact items (0 = all)."),
    finetune_epochs: int | None = typer.Option(None, "--finetune-epochs", help="Fine-tuning epochs of target and retain model."),
) -> None:
    """Fine-tune the target and a retain model on real TOFU authors, unlearn the forget authors with
    ULD and the baselines, evaluate each with TOFU's metrics; cached stage by stage (re-run to resume)."""
    from dataclasses import replace

    from rich.console import Console

    from uld.errors import UldError
    from uld.studies.tofu import default_variants, quick_config, reported_config, run_study

    if not model or not data:
        raise UldError("uld study tofu needs --model (hub id, model directory or .gguf file) and --data (TOFU splits)")
    err = Console(stderr=True)
    cfg = quick_config() if quick else reported_config()
    sizes = {"retain_authors": retain_authors, "forget_authors": forget_authors, "qa_per_author": qa_per_author,
             "general_items": general_items, "finetune_epochs": finetune_epochs}
    cfg = replace(cfg, **{k: v for k, v in sizes.items() if v is not None})
    variants = default_variants(quick)
    if methods:
        wanted = [m.strip() for m in methods.split(",") if m.strip()]
        known = list(dict.fromkeys([v.method for v in variants] + [v.name for v in variants]))
        bad = [m for m in wanted if m not in known]
        if bad:
            raise UldError(f"unknown variant(s) {', '.join(bad)} in --methods; available: {', '.join(known)}")
        variants = [v for v in variants if v.name in wanted or v.method in wanted]
    n_chosen = chosen_seeds if chosen_seeds is not None else (1 if quick else 3)
    result = run_study(model, data, out, cache, cfg, variants, seeds, log=lambda s: err.print(s, highlight=False),
                       chosen_seeds=n_chosen)
    from uld.studies.demo import fmt
    from uld.studies.tofu_report import COLUMNS

    for name, r in result["results"].items():
        print(f"{name:>16}  " + "  ".join(f"{c} {fmt(r.get(k))}" for k, c in COLUMNS[:5]))
