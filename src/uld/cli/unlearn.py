"""`uld unlearn`: train an unlearning method and save a model that loads with one line."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from uld.cli.app import app


@app.command()
def unlearn(
    out: Path = typer.Option(..., "--out", help="Run directory (created; must not exist unless --resume)."),
    model: str = typer.Option(None, "--model", help="Target model: hub id or local directory."),
    data: str = typer.Option(None, "--data", help="Data: directory of split files or hub dataset id."),
    forget: str = typer.Option(None, "--forget", help="Forget split name (default forget10)."),
    retain: str = typer.Option(None, "--retain", help="Retain split name (default retain90)."),
    method: str = typer.Option(None, "--method", help="Method: uld, ga, gd, ga_kl, npo, npo_gd, npo_kl, simnpo, idkpo, rmu."),
    config: Path = typer.Option(None, "--config", help="YAML config (see configs/)."),
    set_: list[str] = typer.Option(None, "--set", help="Override an option, e.g. --set train.lr=1e-4 (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    allow_eval_augmentation: bool = typer.Option(
        False, "--allow-eval-augmentation",
        help="ULD: train on the records' paraphrased/perturbed answers (on TOFU: the evaluation's own).",
    ),
    augment_file: str = typer.Option(None, "--augment-file", help="ULD: augmentation JSON lines (see `uld augment`)."),
) -> None:
    """Unlearn the --forget split from --model while keeping --retain; save the run in --out."""
    from uld.train.config import build_config, load_yaml, parse_set
    from uld.train.run import resume_config
    from uld.train.run import unlearn as run_unlearn

    flags: dict = {"model": model, "method": method, "data.source": data, "data.forget": forget, "data.retain": retain}
    if allow_eval_augmentation:
        flags["augment.allow_eval_fields"] = True
    if augment_file:
        flags["augment.file"] = augment_file
    sets = parse_set(set_ or [])
    if resume:
        cfg = resume_config(out, sets, {k: v for k, v in flags.items() if k in ("model", "method", "data.source", "data.forget", "data.retain")})
    else:
        given = {k: v for k, v in flags.items() if v is not None}
        layers = [(load_yaml(config), f" in {config}")] if config else []
        cfg = build_config(*layers, (given, ""), (sets, " in --set"))
    run_unlearn(cfg, out, resume=resume, command=["uld", "unlearn", *sys.argv[2:]] if sys.argv[1:2] == ["unlearn"] else None)
