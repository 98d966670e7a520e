"""`uld generate`: complete prompts with a ULD directory or any transformers causal LM."""

from __future__ import annotations

import typer

from uld.cli.app import app


def build_prompt(tokenizer, text: str, use_chat_template: bool = True) -> str:
    """The prompt string: the tokenizer's chat template (one user turn + generation prompt) when
    it has one and `use_chat_template`, else TOFU's `[INST] {question} [/INST]` format."""
    from uld.data.prompts import PromptFormat

    return PromptFormat(use_chat_template=use_chat_template).prompt(tokenizer, text)


def generation_kwargs(
    max_new_tokens: int,
    sample: bool,
    temperature: float | None,
    top_p: float | None,
    top_k: int | None,
) -> dict:
    """Arguments for `model.generate`, checked before any model loads (one sentence, exit 2):
    sampling options without `--sample`, a temperature that is not a finite number above 0, a
    top-p outside (0, 1], a negative top-k, or fewer than one new token."""
    from uld.errors import UldError
    from uld.eval.checks import check_generation

    check_generation(max_new_tokens, 1.0 if temperature is None else temperature, 1.0 if top_p is None else top_p)
    given = [n for n, v in (("--temperature", temperature), ("--top-p", top_p), ("--top-k", top_k)) if v is not None]
    if not sample:
        if given:
            verb = "applies" if len(given) == 1 else "apply"
            raise UldError(f"{', '.join(given)} {verb} only with --sample (decoding is greedy without it)")
        return {"max_new_tokens": max_new_tokens, "do_sample": False}
    if top_k is not None and top_k < 0:
        raise UldError(f"--top-k must be >= 0 (0 = off), got {top_k}")
    return {
        "max_new_tokens": max_new_tokens,
        "do_sample": True,
        "temperature": 1.0 if temperature is None else temperature,
        "top_p": 1.0 if top_p is None else top_p,
        "top_k": 0 if top_k is None else top_k,
    }


@app.command("generate")
def generate_command(
    model: str = typer.Option(..., "--model", help="A ULD directory, a transformers model directory or hub id, or a peft adapter."),
    prompt: list[str] = typer.Option(..., "--prompt", help="Prompt text; repeat for a batch (left-padded)."),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", help="Most tokens to generate per prompt."),
    sample: bool = typer.Option(False, "--sample", help="Sample instead of greedy decoding (paper: greedy)."),
    temperature: float | None = typer.Option(None, "--temperature", help="Sampling temperature (default 1.0)."),
    top_p: float | None = typer.Option(None, "--top-p", help="Nucleus sampling mass (default 1.0 = off)."),
    top_k: int | None = typer.Option(None, "--top-k", help="Sample among the k most likely tokens (default 0 = off)."),
    seed: int = typer.Option(0, "--seed", help="Random seed for sampling."),
    no_chat_template: bool = typer.Option(False, "--no-chat-template", help="Use TOFU's plain INST prompt format even if the tokenizer has a chat template."),
    assistant_weight: float | None = typer.Option(None, "--assistant-weight", "--alpha", help="ULD only: override the saved assistant weight w in target - w * assistant (the paper's alpha; --alpha is the old name)."),
    filter_rate: float | None = typer.Option(None, "--filter-rate", help="ULD only: override the saved plausibility rate (0 = off)."),
    target: str | None = typer.Option(None, "--target", help="ULD only: the target model (directory or hub id) to use instead of the one recorded in the run."),
    ignore_target_mismatch: bool = typer.Option(False, "--ignore-target-mismatch", help="ULD only: combine the adapter with a target whose fingerprint differs from the one recorded at save."),
    device: str | None = typer.Option(None, "--device", help="Torch device, e.g. cuda (default: cpu)."),
) -> None:
    """Generate a completion for each prompt and print it (one block per prompt)."""
    from pathlib import Path

    from rich.console import Console

    from uld.device import resolve_device
    from uld.errors import UldError
    from uld.options import check_range

    kwargs = generation_kwargs(max_new_tokens, sample, temperature, top_p, top_k)
    if assistant_weight is not None:
        check_range("--assistant-weight", assistant_weight, low=0.0)
    if filter_rate is not None:
        check_range("--filter-rate", filter_rate, 0.0, 1.0)
    device = resolve_device(device) if device else None
    if not Path(model).exists() and (model.startswith((".", "/", "~")) or model.count("/") > 1):
        raise UldError(f"model {model!r} not found: give a model directory or a hub id")
    err = Console(stderr=True)
    with err.status(f"loading {model}"):
        import torch

        from uld.models.loading import load_model
        from uld.models.uld import ULDForCausalLM
        from uld.models.uld.io import is_uld_dir
        from uld.serve.engine import model_context_length

        uld_only = [n for n, v in (("--assistant-weight", assistant_weight), ("--filter-rate", filter_rate),
                                   ("--target", target), ("--ignore-target-mismatch", ignore_target_mismatch or None))
                    if v is not None]
        if uld_only and not is_uld_dir(model):
            verb = "applies" if len(uld_only) == 1 else "apply"
            raise UldError(f"{', '.join(uld_only)} {verb} only to a ULD run directory, and {model!r} is not one")
        m, tok = load_model(model, device=device, target=target, ignore_target_mismatch=ignore_target_mismatch)
        if isinstance(m, ULDForCausalLM):
            if assistant_weight is not None:
                m.assistant_weight = assistant_weight
            if filter_rate is not None:
                m.filter_rate = filter_rate
    texts = [build_prompt(tok, p, use_chat_template=not no_chat_template) for p in prompt]
    chat = not no_chat_template and bool(getattr(tok, "chat_template", None))
    tok.padding_side = "left"  # decoder-only batches are padded on the left
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=not chat)
    context = model_context_length(m)
    longest = int(enc["attention_mask"].sum(dim=1).max())
    if context is not None and longest + max_new_tokens > context:
        raise UldError(f"the prompt has {longest} tokens and --max-new-tokens is {max_new_tokens}, more than the "
                       f"model's context of {context} tokens; shorten the prompt or lower --max-new-tokens")
    dev = next(m.parameters()).device
    with err.status(f"generating up to {max_new_tokens} tokens for {len(texts)} prompt(s)"):
        torch.manual_seed(seed)
        with torch.no_grad():
            out = m.generate(
                input_ids=enc["input_ids"].to(dev),
                attention_mask=enc["attention_mask"].to(dev),
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
                **kwargs,
            )
    new = out[:, enc["input_ids"].shape[1]:]
    for i, ids in enumerate(new):
        text = tok.decode(ids, skip_special_tokens=True)
        if len(texts) > 1:
            print(f"[{i + 1}] {text}")
        else:
            print(text)
