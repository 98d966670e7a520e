"""`uld audit`: run the adversarial probes of `uld.audit` on an unlearned model."""

from __future__ import annotations

from pathlib import Path

import typer

from uld.cli.app import app


def _ints(text: str, what: str) -> tuple[int, ...]:
    from uld.errors import UldError

    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UldError(f"{what} must be comma-separated whole numbers, got {text!r}") from None


@app.command("audit")
def audit_command(
    model: str = typer.Option(..., "--model", help="The unlearned model: a uld unlearn run or a model directory."),
    data: str = typer.Option(..., "--data", help="TOFU-style data: a directory of splits or a hub id."),
    out: Path = typer.Option(..., "--out", help="Directory for AUDIT.json and AUDIT.md."),
    forget: str = typer.Option("forget10", "--forget", help="Forget split (its _perturbed version is used when present)."),
    reference: str | None = typer.Option(None, "--reference",
                                         help="Retain model (audited too: the floor) or its evaluation log (forget quality)."),
    target: str | None = typer.Option(None, "--target", help="The model before unlearning (default: read from the run)."),
    probes: str = typer.Option("paraphrase,sampling,quantize,relearn,components", "--probes", help="Comma-separated probes."),
    max_items: int | None = typer.Option(None, "--max-items", help="First N forget items."),
    k: int = typer.Option(10, "--k", help="Samples per question for leak@k."),
    temperature: float = typer.Option(1.0, "--temperature", help="Sampling temperature for leak@k."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus mass for leak@k (1.0: no truncation)."),
    leak_threshold: float = typer.Option(0.5, "--leak-threshold", help="ROUGE-L recall at which an answer leaks."),
    few_shot: int = typer.Option(3, "--few-shot", help="Retain QA pairs before each question (few-shot variant)."),
    bits: str = typer.Option("8,4", "--bits", help="Quantisation widths, 2..16, comma-separated."),
    group_size: int = typer.Option(128, "--group-size", help="Input columns per quantisation group."),
    relearn_steps: int = typer.Option(30, "--relearn-steps", help="Fine-tuning steps of the relearning attack."),
    relearn_fraction: float = typer.Option(0.25, "--relearn-fraction", help="Share of the forget items the attacker trains on."),
    relearn_lr: float = typer.Option(1e-3, "--relearn-lr", help="Learning rate of the attacker's LoRA."),
    augment_file: str | None = typer.Option(None, "--augment-file", help="Reworded questions when the records have none."),
    batch_size: int = typer.Option(16, "--batch-size", help="Sequences per forward pass / generation batch."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", help="Length of greedy and sampled answers."),
    seed: int = typer.Option(0, "--seed", help="Seed of sampling and of the relearning split."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, ... (default: cuda when available)."),
    chat_template: bool = typer.Option(True, "--chat-template/--no-chat-template", help="Use the tokenizer's chat template."),
) -> None:
    """Does the forgetting survive an adversary? Paraphrase, sampling, quantisation, relearning, components."""
    from rich.console import Console

    from uld.audit import AuditSettings, run_audit
    from uld.data.prompts import PromptFormat

    settings = AuditSettings(
        probes=tuple(p.strip() for p in probes.split(",") if p.strip()), max_items=max_items, batch_size=batch_size,
        max_new_tokens=max_new_tokens, leak_k=k, temperature=temperature, top_p=top_p, leak_threshold=leak_threshold,
        few_shot=few_shot, bits=_ints(bits, "--bits"), group_size=group_size, relearn_steps=relearn_steps,
        relearn_fraction=relearn_fraction, relearn_lr=relearn_lr, seed=seed,
        prompt_format=PromptFormat(use_chat_template=chat_template), device=device or "cpu",
    )
    if device is None:
        import torch

        settings.device = "cuda" if torch.cuda.is_available() else "cpu"
    err = Console(stderr=True)
    run_audit(model, data, forget, out, settings, reference=reference, target=target, augment_file=augment_file, log=err.print)
    Console().print((out / "AUDIT.md").read_text(encoding="utf-8"), markup=False, highlight=False)
