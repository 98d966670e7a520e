"""The target's fingerprint: what a run directory records about the model it was trained on.

A ULD run stores the assistant only and finds its target again at load time, so a directory could
silently combine its adapter with whatever model now sits at the target's path. The fingerprint
(its architecture fields and a few evenly spaced values of four weight tensors: the input
embedding, the first parameter of the first and of the last decoder block, and the output head)
is recorded at save and compared at load. Values are compared with a tolerance of 1 % of their
magnitude, so the same target loaded in another dtype (float32, bfloat16, float16) matches, while
a fine-tuned or different model does not (fine-tuning moves some of the 128 sampled values by more).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from uld.models.blocks import find_decoder_blocks

ARCH_FIELDS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "intermediate_size")
SAMPLES = 32
RTOL, ATOL = 1e-2, 1e-6


def _sample(t: torch.Tensor) -> list[float] | None:
    if t.device.type == "meta" or t.numel() == 0:
        return None
    flat = t.detach().reshape(-1)
    # float64: in float32 the last index of a tensor over 2^24 elements (e.g. a 49,152 x 576 embedding)
    # rounds past its end.
    n = flat.numel()
    idx = torch.linspace(0, n - 1, min(SAMPLES, n), dtype=torch.float64).round().long().clamp_(max=n - 1).to(flat.device)
    return [float(x) for x in flat.index_select(0, idx).float().cpu()]


def _tensors(target: nn.Module) -> dict[str, torch.Tensor]:
    _, blocks = find_decoder_blocks(target)
    out = {"embed": target.get_input_embeddings().weight}
    out["first_block"] = next(blocks[0].parameters())
    out["last_block"] = next(blocks[len(blocks) - 1].parameters())
    head = target.get_output_embeddings().weight
    if head is not out["embed"]:
        out["head"] = head
    return out


def target_fingerprint(target: nn.Module) -> dict[str, Any]:
    """{"config": architecture fields, "samples": {tensor role: sampled values}} of `target`."""
    cfg = target.config.get_text_config(decoder=True)
    arch = {k: getattr(cfg, k) for k in ARCH_FIELDS if isinstance(getattr(cfg, k, None), int | str)}
    samples = {role: s for role, t in _tensors(target).items() if (s := _sample(t)) is not None}
    return {"config": arch, "samples": samples}


def fingerprint_difference(recorded: dict[str, Any], target: nn.Module) -> str | None:
    """How `target` differs from the `recorded` fingerprint (one phrase), or None when it matches."""
    now = target_fingerprint(target)
    for key, want in (recorded.get("config") or {}).items():
        got = now["config"].get(key)
        if got is not None and got != want:
            return f"its {key} is {got!r}, the run's target had {want!r}"
    for role, want in (recorded.get("samples") or {}).items():
        got = now["samples"].get(role)
        if got is None:
            continue
        if len(got) != len(want):
            return f"its {role.replace('_', ' ')} weights have another size"
        for a, b in zip(got, want, strict=True):
            if not math.isclose(a, b, rel_tol=RTOL, abs_tol=ATOL):
                return f"its {role.replace('_', ' ')} weights differ (e.g. {a:.6g} where the run's target had {b:.6g})"
    return None
