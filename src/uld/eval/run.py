"""Evaluate a model directory and write the result files: what `uld eval` does, as one function
that the demo pipeline and the studies call with their own `EvalConfig`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from uld.errors import UldError
from uld.eval.config import EvalConfig, recorded_prompt
from uld.eval.tasks.tofu import Progress
from uld.io import check_out
from uld.models.loading import resolve_model_path

Log = Callable[[str], None]


def check_output(out: str | Path, inputs: dict[str, str | Path | None]) -> None:
    """Refuse an output directory whose files would replace one of the inputs (one sentence)."""
    from uld.eval.results import EVAL_FILE, SUMMARY_FILE, UNAVAILABLE_FILE

    out_p = Path(out)
    check_out(out_p)
    out_r = out_p.resolve()
    written = {out_r / f for f in (EVAL_FILE, SUMMARY_FILE, UNAVAILABLE_FILE)}
    for option, value in inputs.items():
        if value is None:
            continue
        p = Path(value).resolve()
        if p == out_r or p in written:
            raise UldError(f"--out {str(out)!r} would overwrite the {option} it reads ({str(value)!r}); write the results elsewhere")


def prompt_format_for(config: EvalConfig, model_dir: str, log: Log | None = None):
    """The prompt format: `--prompt-template` when given, else the one the `uld unlearn` run
    recorded (its config.yaml), else `EvalConfig`'s default."""
    from uld.data.prompts import PromptFormat

    if config.prompt_template is None:
        rec = recorded_prompt(model_dir)
        if rec is not None:
            default = PromptFormat()
            fmt = PromptFormat(
                str(rec.get("template", default.template)),
                str(rec.get("answer_prefix", default.answer_prefix)) if config.answer_prefix is None else config.answer_prefix,
                bool(rec.get("use_chat_template", True)) and config.chat_template,
            )
            if log:
                log(f"prompt format recorded by the run: {rec['path']}")
            return fmt
    return config.prompt_format()


def evaluate_model(
    model: str | Path,
    data: str | Path,
    out: str | Path,
    config: EvalConfig | None = None,
    reference: str | Path | None = None,
    reference_model: str | Path | None = None,
    progress: Progress | None = None,
    warn: Log | None = None,
    log: Log | None = None,
) -> tuple[dict[str, dict], dict[str, Any]]:
    """Evaluate `model` on `config.task` and write its result files into `out`.

    Everything that can fail on bad input is checked before the model is loaded and before any
    file is written. Returns (metrics in TOFU_EVAL.json layout, summary)."""
    from uld.eval.reference import read_log
    from uld.eval.registry import select
    from uld.eval.results import write_results
    from uld.eval.tasks.tofu import TASK, check_reference, evaluate_tofu, load_tofu_data

    config = config or EvalConfig()
    config.check()
    if config.task != TASK:
        from uld.errors import unknown_choice

        raise unknown_choice("--task", config.task, (TASK,))
    check_output(out, {"--reference": reference})
    names = select(TASK, config.metrics)
    if not config.mia:
        names = [n for n in names if not n.startswith("mia_") and n != "privleak"]
    splits = {n.split("_")[0] for n in names} | ({"forget"} if any(n in names for n in ("forget_quality", "extraction_strength", "exact_memorization")) else set())
    if "model_utility" in names:
        splits |= {"retain", "ra", "wf"}
    want_mia = any(n.startswith("mia_") for n in names)
    if want_mia:
        splits.add("forget")
    tofu = load_tofu_data(str(data), config.forget, max_items=config.max_items, mia=want_mia,
                          splits=tuple(k for k in ("forget", "retain", "ra", "wf") if k in splits))
    ref = read_log(reference) if reference else None
    if ref is not None and "forget" in tofu.records:
        check_reference(ref, [r["answer"] for r in tofu.records["forget"]], config.forget)
    if "mia_reference" in names and reference_model is None:
        raise UldError("--metrics asks for mia_reference, which needs --reference-model DIR (e.g. the retain model)")

    import torch

    from uld.eval.lm import HFLanguageModel
    from uld.eval.tasks.tofu import QAEncoder, check_lengths
    from uld.models.loading import load_model, load_tokenizer

    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    path = resolve_model_path(str(model))
    if config.assistant_weight is not None:
        from uld.models.uld.io import is_uld_dir

        if not is_uld_dir(path):
            raise UldError(f"--assistant-weight applies only to a ULD run directory, and {str(model)!r} is not one")
    local = Path(path)
    if local.is_dir() and any((local / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        # lengths are checked with the tokenizer alone, before the weights are loaded
        encoder = QAEncoder(load_tokenizer(local), prompt_format_for(config, path), config.protocol, config.max_length)
        check_lengths(encoder, tofu, config.max_length, config.max_new_tokens, None)
    lm_model, tokenizer = load_model(path, device=device)
    if config.assistant_weight is not None:
        lm_model.assistant_weight = config.assistant_weight
    fmt = prompt_format_for(config, path, log)
    lm = HFLanguageModel(lm_model, tokenizer, batch_size=config.batch_size, device=device)
    ref_lm = None
    if "mia_reference" in names:
        ref_model, ref_tok = load_model(resolve_model_path(str(reference_model)), device=device)
        if ref_tok.get_vocab() != tokenizer.get_vocab():
            raise UldError(f"--reference-model {str(reference_model)!r} has another tokenizer than the model; the reference attack needs the same one")
        ref_lm = HFLanguageModel(ref_model, ref_tok, batch_size=config.batch_size, device=device)
    metrics = evaluate_tofu(
        lm, tofu, fmt, names, config.protocol, config.max_length, config.max_new_tokens, config.min_k,
        reference=ref, reference_lm=ref_lm, gradnorm_p=config.gradnorm_p, progress=progress, warn=warn,
    )
    summary = write_results(out, metrics)
    return metrics, summary
