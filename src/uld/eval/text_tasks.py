"""The text benchmarks as one call each, for `uld eval --task muse|copyright` and the studies:
load the model, read the data, evaluate, write the result files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from uld.errors import UldError, unknown_choice
from uld.io import check_out

TEXT_TASKS = ("muse", "copyright")
Progress = Callable[[str, int], Callable[[int], None]]


def evaluate_text_task(task: str, model: str, data: str, out: str | Path, reference: str | None = None,
                       batch_size: int = 8, max_length: int = 2048, max_items: int | None = None,
                       max_new_tokens: int | None = None, device: str | None = None,
                       progress: Progress | None = None) -> tuple[dict[str, dict], dict[str, float], Path]:
    """Run `task` on `model` (any directory `uld.models.loading.load_model` reads) and write its
    files into `out`. `max_new_tokens` overrides VerbMem's 128 (muse) or the completion length 200
    (copyright). Returns (metrics, summary, path of the eval file)."""
    if task not in TEXT_TASKS:
        raise unknown_choice("text task", task, TEXT_TASKS)
    if batch_size < 1:
        raise UldError(f"--batch-size must be at least 1, got {batch_size}")
    out = Path(out)
    check_out(out)
    # Inputs are read and checked before the model loads.
    if task == "muse":
        from uld.eval.muse import (
            EVAL_FILE,
            MuseConfig,
            evaluate_muse,
            load_muse_data,
            read_muse_log,
            write_muse_results,
        )

        mdata = load_muse_data(data, max_items)
        ref = read_muse_log(reference) if reference else None
        cfg = MuseConfig() if max_new_tokens is None else MuseConfig(verbmem_max_new_tokens=max_new_tokens)
    else:
        from uld.eval.copyright import (
            EVAL_FILE,
            CopyrightConfig,
            evaluate_copyright,
            load_copyright_data,
            write_copyright_results,
        )

        cdata = load_copyright_data(data)
        ccfg = CopyrightConfig(max_items=max_items or 400)
        if max_new_tokens is not None:
            ccfg.max_new_tokens = max_new_tokens
    import torch

    from uld.eval.textlm import HFTextLM
    from uld.models.loading import load_model, resolve_model_path

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    lm_model, tok = load_model(resolve_model_path(model), device=device)
    lm = HFTextLM(lm_model, tok, batch_size=batch_size, max_length=max_length, device=device)
    if task == "muse":
        metrics = evaluate_muse(lm, mdata, ref, cfg, progress)
        return metrics, write_muse_results(out, metrics), out / EVAL_FILE
    metrics = evaluate_copyright(lm, cdata, ccfg, progress)
    return metrics, write_copyright_results(out, metrics), out / EVAL_FILE
