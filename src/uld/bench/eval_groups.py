"""The `eval` bench's per-group timing: each metric group of the TOFU registry alone."""

from __future__ import annotations

import time

from uld.bench import measure as M

EVAL_GROUPS = ("probability", "generation", "memorization", "mia", "gradient")
"""Metric groups of the registry timed by `eval`, each alone (its requests only)."""


def eval_groups(target, tok, data: str, repeats: int, items: int, batch: int, new_tokens: int, device: str) -> dict:
    """Seconds and items/s of each metric group at the batched size: the TOFU task scores only
    what the group's metrics need; items = requests answered (scored sequences, generated
    questions, or attacked forget + holdout items), counted through the progress callback."""
    from uld.data.prompts import PromptFormat
    from uld.eval.lm import HFLanguageModel
    from uld.eval.registry import select
    from uld.eval.tasks.tofu import QAEncoder, load_tofu_data, score

    tofu = load_tofu_data(data, "forget10", max_items=items, mia=True)
    lm = HFLanguageModel(target, tok, batch_size=batch, device=device)
    encoder = QAEncoder(tok, PromptFormat(), "uld", 512)
    out = {}
    for group in EVAL_GROUPS:
        names = select("tofu", group)
        counted: dict[str, int] = {}

        def progress(description: str, total: int, counted=counted):
            def tick(n: int) -> None:
                counted[description] = counted.get(description, 0) + n
            return tick

        times = []
        for _ in range(repeats):
            counted.clear()
            M.sync()
            t0 = time.perf_counter()
            score(lm, encoder, tofu, names, max_new_tokens=new_tokens, progress=progress)
            M.sync()
            times.append(time.perf_counter() - t0)
        if group == "gradient":  # its likelihood prerequisites are the mia group's; count the attacked items
            done = counted.get("gradient norms", 0)
        else:
            done = sum(counted.values())
        out[group] = {"metrics": names, "items": done, "seconds": times}
    return out
