"""`uld augment`: write ULD's augmentation file (paraphrases + wrong answers) with a local model."""

from __future__ import annotations

from pathlib import Path

import typer

from uld.cli.app import app


@app.command()
def augment(
    model: str = typer.Option(..., "--model", help="A local (or hub) instruct model that writes the variants."),
    data: str = typer.Option(..., "--data", help="Data: directory of split files or hub dataset id."),
    split: str = typer.Option("forget10", "--split", help="The forget split to augment."),
    out: Path = typer.Option(..., "--out", help="Output JSON lines file (question, answer, paraphrases, distractors)."),
    num_paraphrases: int = typer.Option(2, "--num-paraphrases", help="Paraphrases sampled per pair (paper: 2)."),
    num_distractors: int = typer.Option(2, "--num-distractors", help="Wrong answers sampled per pair (paper: 2)."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", help="Longest variant, in tokens."),
    temperature: float = typer.Option(0.9, "--temperature", help="Sampling temperature."),
    batch_size: int = typer.Option(8, "--batch-size", help="Records per generation batch."),
    seed: int = typer.Option(0, "--seed", help="Random seed for sampling."),
    device: str = typer.Option(None, "--device", help="Torch device, e.g. cuda (default: cpu)."),
) -> None:
    """Prompt --model for paraphrases and wrong answers of each --split record; write --out.

    Use the file with `uld unlearn --method uld --augment-file OUT`. Unlike TOFU's own
    paraphrased/perturbed fields, these variants are not the ones the evaluation scores.
    """
    import json
    import sys

    import torch
    from rich.progress import Progress

    from uld.data.augment import generate_augmentations
    from uld.data.records import SPLIT_SUFFIXES, load_split
    from uld.device import resolve_device
    from uld.errors import UldError
    from uld.eval.checks import check_generation
    from uld.io import atomic_write_text, check_out
    from uld.models.loading import load_model

    check_generation(max_new_tokens, temperature)
    if num_paraphrases < 0 or num_distractors < 0 or batch_size < 1:
        raise UldError("--num-paraphrases/--num-distractors must be >= 0 and --batch-size >= 1")
    # The split file read is an input too: `--out DATA/forget10.json` would replace it.
    split_files = {f"--split {split} ({suffix})": Path(data) / f"{split}{suffix}" for suffix in SPLIT_SUFFIXES}
    check_out(out, {"--data": data, "--model": model, **split_files}, kind="file")
    device = resolve_device(device) if device else None
    records = load_split(data, split)
    lm, tok = load_model(model, device=device)
    torch.manual_seed(seed)
    with Progress(transient=True) as bar:
        task = bar.add_task(f"augment {split}", total=len(records))
        rows = generate_augmentations(lm, tok, records, num_paraphrases, num_distractors, max_new_tokens,
                                      temperature, batch_size, progress=lambda n: bar.advance(task, n))
    atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    short = sum(len(r["paraphrases"]) < num_paraphrases or len(r["distractors"]) < num_distractors for r in rows)
    print(f"wrote {len(rows)} records to {out}" + (f"; {short} have fewer variants than asked" if short else ""),
          file=sys.stderr)
