"""Quantisation probe: round-to-nearest weight quantisation of every linear layer as served.

Zhang et al. 2024 ("Catastrophic failure of LLM unlearning via quantization", arXiv 2410.16454)
found that 4-bit quantisation of models unlearned with gradient-based methods brings back most
of the forgotten knowledge (21 % -> 83 % retained on their benchmark): unlearning moved the weights
by less than a quantisation step. Here, in plain torch so it runs on a CPU:

    w_q = (clamp(round(w / s) + z, 0, 2^b - 1) - z) * s,   s = (max - min) / (2^b - 1),
    z = round(-min / s)

asymmetric with a zero point, min/max taken per output channel (a weight row) or per group of
`group_size` consecutive input columns of a row (GPTQ and AWQ's grouping). Every `nn.Linear`
(and GPT-2 `Conv1D`) weight of the served model is quantised once, the output head included;
for ULD that is the target *and* the assistant (its shared blocks are the target's tensors, its
LoRA A and B matrices are linear layers too), for offset unlearning the target and both small
models. Embedding tables are left alone unless tied to the head. Weights are restored afterwards.

What real quantisers add and this probe does not: GPTQ (arXiv 2210.17323) corrects each column's
rounding error on the remaining columns with second-order (Hessian) information from calibration
data, AWQ rescales salient channels, and bitsandbytes' NF4 uses a normal-quantile grid with
double-quantised block scales and computes in 16 bits. Round-to-nearest is the crudest of them,
so the change it makes to the weights is an upper bound of theirs at the same width.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from uld.audit.base import AuditContext, Measures, Variant, measure, probe, scorer_for


def quantize_weight(w: torch.Tensor, bits: int, group_size: int | None = None) -> torch.Tensor:
    """Round-to-nearest (asymmetric, zero point) of a 2-d weight (out, in), per row or per group
    of `group_size` input columns; returns a tensor of w's shape and dtype."""
    if w.dim() != 2:
        raise ValueError(f"expected a 2-d weight, got shape {tuple(w.shape)}")
    rows, cols = w.shape
    x = w.detach().float()
    g = cols if group_size is None or group_size >= cols else group_size
    pad = (-cols) % g
    if pad:  # pad the last group with copies of its last column: min/max unchanged
        x = torch.cat([x, x[:, -1:].expand(rows, pad)], dim=1)
    x = x.reshape(rows, -1, g)
    lo = x.amin(-1, keepdim=True).clamp(max=0.0)  # the grid always holds 0 exactly
    hi = x.amax(-1, keepdim=True).clamp(min=0.0)
    levels = 2**bits - 1
    scale = (hi - lo) / levels
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero = torch.round(-lo / scale)
    q = torch.clamp(torch.round(x / scale) + zero, 0, levels)
    deq = ((q - zero) * scale).reshape(rows, -1)[:, :cols]
    return deq.to(w.dtype)


def linear_weights(model: nn.Module) -> list[tuple[str, nn.Parameter, bool]]:
    """(name, weight, stored transposed) of every linear layer, each tensor once."""
    from transformers.pytorch_utils import Conv1D

    seen: set[int] = set()
    out = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear | Conv1D) and id(m.weight) not in seen:
            seen.add(id(m.weight))
            out.append((name, m.weight, isinstance(m, Conv1D)))  # Conv1D keeps (in, out)
    return out


@contextlib.contextmanager
def quantized(model: nn.Module, bits: int, group_size: int | None) -> Iterator[dict]:
    """Quantise every linear weight of `model` in place; restore the originals on exit.

    Yields {"tensors": count, "parameters": count} of what was quantised."""
    weights = linear_weights(model)
    saved = [w.detach().clone() for _, w, _ in weights]
    try:
        with torch.no_grad():
            for _, w, transposed in weights:
                if transposed:
                    w.copy_(quantize_weight(w.t(), bits, group_size).t())
                else:
                    w.copy_(quantize_weight(w, bits, group_size))
        yield {"tensors": len(weights), "parameters": sum(w.numel() for _, w, _ in weights)}
    finally:
        with torch.no_grad():
            for (_, w, _), orig in zip(weights, saved, strict=True):
                w.copy_(orig)


def max_logit_change(model, tokenizer, fmt, items, bits: int, group_size: int | None, device: str) -> float:
    """max |logits_q - logits| / max |logits| over the first 8 forget QA pairs (prompt + answer)."""
    from uld.data.collate import right_pad
    from uld.data.prompts import encode_qa

    enc = [encode_qa(tokenizer, r["question"], r["answer"], fmt).input_ids for r in items[:8]]
    ids, mask = right_pad(enc, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    ids, mask = ids.to(device), mask.to(device)
    keep = mask.bool()
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask).logits.float()[keep]
        with quantized(model, bits, group_size):
            after = model(input_ids=ids, attention_mask=mask).logits.float()[keep]
    finite = torch.isfinite(before) & torch.isfinite(after)
    scale = before[finite].abs().max().clamp_min(1e-12)
    return float((after[finite] - before[finite]).abs().max() / scale)


def variant_specs(bits: tuple[int, ...], group_size: int) -> list[tuple[str, int, int | None]]:
    return [(f"rtn{b}-{'channel' if g is None else f'g{group_size}'}", b, g) for b in bits for g in (None, group_size)]


@probe("quantize")
def quantize_probe(ctx: AuditContext) -> list[Variant]:
    s = ctx.settings
    variants = []
    qs = [r["question"] for r in ctx.items]
    for name, bits, group in variant_specs(s.bits, s.group_size):
        how = "per output channel" if group is None else f"in groups of {group} input columns"
        v = Variant(name, f"round-to-nearest {bits}-bit weights {how}, every linear layer as served")
        for sname, sub in ctx.subjects.items():
            ctx.log(f"audit: quantize/{name} on {sname}")

            def run(sub=sub, bits=bits, group=group) -> tuple[Measures, dict]:
                with quantized(sub.model, bits, group) as info:
                    m = measure(scorer_for(sub.model, sub.tokenizer, s), qs, ctx.items, s)
                change = max_logit_change(sub.model, sub.tokenizer, s.prompt_format, ctx.items, bits, group, s.device)
                return m, {**info, "max_logit_change": change}

            v.results[sname], v.extra.setdefault("quantized", {})[sname] = ctx.cached(sub, f"quantize/{name}", run)
        variants.append(v)
    return variants
