"""The ULD assistant: the target's embeddings, its first K decoder blocks, its final norm and its
output head, plus LoRA adapters (Ji et al., NeurIPS 2024).

How it is built, generically for any transformers decoder-only causal LM:

1. The decoder blocks are found as the `nn.ModuleList` under `get_decoder()` whose length is the
   config's `num_hidden_layers` (Llama/Mistral/Qwen2/Phi-3 `model.layers`, GPT-NeoX
   `gpt_neox.layers`, GPT-2 `transformer.h`).
2. The whole target *module tree* is copied with every parameter, buffer and tensor attribute
   mapped to itself (a `deepcopy` whose memo holds the target's tensors): the copy is a new set of
   module objects, so peft can inject LoRA into it without touching the target, while every weight
   in it *is* the target's tensor (no memory added). Embeddings, position embeddings (GPT-2),
   rotary embedding, final norm (`norm`, `final_layer_norm`, `ln_f`) and output head (`lm_head`,
   `embed_out`) come along wherever the family keeps them.
3. The copied block list is cut to its first K blocks and the copied config says K layers
   (per-layer config lists such as `layer_types` are cut too), so the family's own `forward`
   (masks, caches, `logits_to_keep`, learned or rotary positions) runs the small model unchanged.
4. LoRA (peft) goes on every linear layer inside the K blocks (`nn.Linear`, GPT-2's `Conv1D` with
   `fan_in_fan_out`), never on the head. With `lora_rank=0` the K blocks are instead replaced by a
   trainable private copy (the only case where weights are copied).
5. In eval mode each LoRA layer runs a lean forward, `base(x) + B(A(x)) * scaling`, the same
   operations peft runs in eval mode without its per-call bookkeeping (about 80 us per layer on a
   CPU, more than the layer's own matmuls at batch 1; `uld bench generate`). Training, merged or
   disabled adapters, extra adapters and LoRA variants all go through peft's own forward. LoRA is
   never merged: the base weights are the target's tensors, and merging would change the target,
   so each layer's `merge` (and so peft's `merge_and_unload`) raises a `UldError` instead.
6. `norm_scale > 0` (not in the paper) gives the assistant a trainable private copy of the final
   norm whose gain starts at the target's times `norm_scale`. The target's final norm is tuned for
   its last block's residual stream, whose scale and outlier dimensions differ from block K's: on
   SmolLM2-135M, block 7 of 30 read through the target's norm and head gives answer tokens ~21
   nats (uniform: 10.8) because its logits are too sharp; a gain of 0.2x gives ~8.7 nats.

The shared weights get `requires_grad=False` (on the target too: they are the same tensors).
"""

from __future__ import annotations

import copy
import types
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from uld.errors import UldError
from uld.models.blocks import check_block_count, find_decoder_blocks, truncate_blocks
from uld.models.defaults import LORA_ALPHA, LORA_DROPOUT, LORA_RANK

__all__ = ["LoraRows", "ULDAssistant", "build_assistant", "find_decoder_blocks"]


@dataclass
class LoraRows:
    """Which batch rows the assistant's LoRA layers update: rows from `start` on (0: all).

    The fused inference pass (`uld.models.uld.fused`) stacks the target's rows before the
    assistant's in one batch through the shared blocks; it sets `start` to the target's row count
    for the length of one call, so LoRA acts on the assistant's rows only. One object per assistant,
    shared by all its LoRA layers.
    """

    start: int = 0

ADAPTER_NAME = "default"


class ULDAssistant(nn.Module):
    """A small causal LM sharing the target's weights; only its adapter (or block copy) trains.

    Call it like a causal LM: `assistant(input_ids=(B, T), attention_mask=(B, T), position_ids=
    (B, T) | None, cache=..., use_cache=False, logits_to_keep=0)` returns the family's
    `CausalLMOutputWithPast` with `.logits` (B, T', V) and `.cache` when `use_cache`.
    """

    def __init__(self, model: nn.Module, trainable_names: list[str], assistant_config: dict,
                 lora_rows: LoraRows | None = None):
        super().__init__()
        self.model = model
        self.lora_rows = lora_rows if lora_rows is not None else LoraRows()
        self._trainable_names = list(trainable_names)
        # K, LoRA settings and the block path: what `ULDForCausalLM.save_pretrained` records.
        self.assistant_config = dict(assistant_config)

    @property
    def config(self):
        """The transformers config of the K-block model (e.g. for `DynamicCache(config=...)`)."""
        return self.model.config

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Any = None,
        past_key_values: Any = None,
        use_cache: bool = False,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ):
        if cache is None:
            cache = past_key_values
        return self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The adapter's parameters (LoRA A/B, or the private block copy), in a fixed order."""
        params = dict(self.model.named_parameters())
        return [params[n] for n in self._trainable_names]

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the trainable tensors (what is saved), detached, keyed by name inside the model."""
        params = dict(self.model.named_parameters())
        return {n: params[n].detach() for n in self._trainable_names}

    def load_adapter_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Copy saved adapter tensors in; names and shapes must match exactly."""
        expected = set(self._trainable_names)
        got = set(state_dict)
        if got != expected:
            missing, extra = sorted(expected - got), sorted(got - expected)
            raise UldError(
                f"the adapter does not fit this assistant: {len(missing)} tensors missing "
                f"(e.g. {missing[:2]}), {len(extra)} unexpected (e.g. {extra[:2]})"
            )
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name in self._trainable_names:
                src, dst = state_dict[name], params[name]
                if tuple(src.shape) != tuple(dst.shape):
                    raise UldError(
                        f"the adapter tensor {name!r} has shape {tuple(src.shape)}, "
                        f"the assistant expects {tuple(dst.shape)}"
                    )
                dst.copy_(src.to(device=dst.device, dtype=dst.dtype))


def _linear_names(module: nn.Module) -> dict[str, nn.Module]:
    """Names (relative to `module`) of its linear layers: `nn.Linear` and GPT-2's `Conv1D`."""
    from transformers.pytorch_utils import Conv1D

    return {n: m for n, m in module.named_modules() if isinstance(m, nn.Linear | Conv1D)}


def _shared_copy(target: nn.Module) -> nn.Module:
    """A new module tree whose every tensor is the target's own (no weight is copied)."""
    memo: dict[int, Any] = {}
    for m in target.modules():
        for t in list(m._parameters.values()) + list(m._buffers.values()):
            if t is not None:
                memo[id(t)] = t
        for v in vars(m).values():
            if isinstance(v, torch.Tensor):
                memo[id(v)] = v
    return copy.deepcopy(target, memo)


def build_assistant(
    target: nn.Module,
    num_layers: int | None = None,
    lora_rank: int = LORA_RANK,
    lora_alpha: float = LORA_ALPHA,
    lora_dropout: float = LORA_DROPOUT,
    target_modules: list[str] | str | None = None,
    norm_scale: float = 0.0,
) -> ULDAssistant:
    """Build the ULD assistant from `target` (paper: K = layers/4, LoRA r 32, alpha 32,
    dropout 0.05 on every linear layer in the blocks).

    `num_layers` K (None: a quarter of the target's layers, at least 1) must satisfy
    1 <= K < layers. `target_modules` restricts LoRA to linear layers inside the K blocks whose
    name ends with one of the given names (e.g. `["q_proj", "v_proj"]`); it must match at least one.
    `lora_rank=0` trains a private copy of the K blocks instead of LoRA. `norm_scale > 0` also
    trains a private copy of the final norm, its gain starting at the target's x `norm_scale`
    (0: the target's norm, shared and frozen, as in the paper).
    """
    blocks_path, blocks = find_decoder_blocks(target)
    n = len(blocks)
    k = check_block_count(max(1, n // 4) if num_layers is None else num_layers, n, "the assistant")
    if lora_rank < 0:
        raise UldError(f"lora_rank must be >= 0 (0 = a trainable copy of the blocks), got {lora_rank}")

    model = _shared_copy(target)
    truncate_blocks(model, blocks_path, k)

    for p in model.parameters():  # shared with the target: frozen (ULD never changes the target)
        p.requires_grad_(False)

    rows = LoraRows()
    if lora_rank == 0:
        resolved: list[str] = []
        cut = model.get_submodule(blocks_path)
        memo = {id(model.config): model.config}
        for i in range(k):
            cut[i] = copy.deepcopy(cut[i], dict(memo))  # fresh tensors: the private copy
            cut[i].requires_grad_(True)
        prefix = f"{blocks_path}."
        trainable = [name for name, _ in model.named_parameters() if name.startswith(prefix)]
    else:
        resolved = _resolve_lora_targets(model, blocks_path, k, target_modules)
        trainable = _inject_lora(model, resolved, lora_rank, lora_alpha, lora_dropout, rows)
    if norm_scale < 0:
        raise UldError(f"norm_scale must be >= 0 (0 = the target's final norm, shared), got {norm_scale}")
    if norm_scale > 0:
        trainable += _private_norm(model, norm_scale)

    cfg = {
        "num_layers": k,
        "target_layers": n,
        "lora_rank": lora_rank,
        "lora_alpha": lora_alpha,
        "lora_dropout": lora_dropout,
        "target_modules": None if target_modules is None else _as_list(target_modules),
        "lora_modules": resolved,
        "blocks_path": blocks_path,
        "norm_scale": norm_scale,
    }
    assistant = ULDAssistant(model, trainable, cfg, rows)
    assistant.train(target.training)
    return assistant


FINAL_NORMS = ("norm", "final_layer_norm", "ln_f")
"""Where decoder families keep the final norm, under `get_decoder()` (Llama, OPT, GPT-2 / NeoX)."""


def _private_norm(model: nn.Module, scale: float) -> list[str]:
    """Replace the final norm of `model` (the assistant's module tree) by a trainable copy whose
    weight (gain) is the target's x `scale`; returns the new parameters' names."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    attr = next((a for a in FINAL_NORMS if isinstance(getattr(decoder, a, None), nn.Module)), None)
    if attr is None:
        raise UldError(f"norm_scale needs the final norm of {type(model).__name__}; none found among {', '.join(FINAL_NORMS)}")
    norm = copy.deepcopy(getattr(decoder, attr))  # fresh tensors: the target's norm is untouched
    weight = getattr(norm, "weight", None)
    if not isinstance(weight, nn.Parameter):
        raise UldError(f"norm_scale needs a final norm with a gain; {type(norm).__name__} has none")
    with torch.no_grad():
        weight.mul_(scale)
    norm.requires_grad_(True)
    setattr(decoder, attr, norm)
    prefix = next(n for n, m in model.named_modules() if m is norm)
    return [f"{prefix}.{n}" for n, _ in norm.named_parameters()]


def _as_list(x: list[str] | str) -> list[str]:
    return [x] if isinstance(x, str) else list(x)


def _resolve_lora_targets(model: nn.Module, blocks_path: str, k: int, target_modules) -> list[str]:
    """Qualified names of the linear layers inside the K blocks that get LoRA."""
    names: list[str] = []
    blocks = model.get_submodule(blocks_path)
    for i in range(k):
        for rel in _linear_names(blocks[i]):
            if rel:
                names.append(f"{blocks_path}.{i}.{rel}")
    if not names:
        raise UldError(f"no linear layer found inside the decoder blocks of {type(model).__name__}")
    if target_modules is None:
        return names
    wanted = _as_list(target_modules)
    chosen = [n for n in names if any(n == w or n.endswith(f".{w}") for w in wanted)]
    if not chosen:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
        raise UldError(
            f"LoRA target modules {wanted} match no linear layer in the decoder blocks; "
            f"available: {', '.join(leaves)}"
        )
    return chosen


def _inject_lora(model: nn.Module, names: list[str], r: int, alpha: float, dropout: float, rows: LoraRows) -> list[str]:
    from peft import LoraConfig, inject_adapter_in_model
    from transformers.pytorch_utils import Conv1D

    modules = dict(model.named_modules())
    fan_in_fan_out = all(isinstance(modules[n], Conv1D) for n in names)
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=names,  # full names: matched exactly, so the head can never get LoRA
        fan_in_fan_out=fan_in_fan_out,
        bias="none",
    )
    inject_adapter_in_model(config, model, adapter_name=ADAPTER_NAME)
    for name in names:
        layer = model.get_submodule(name)
        layer.forward = types.MethodType(_lean_lora_forward, layer)
        layer.merge = types.MethodType(_refuse_merge, layer)
        layer.uld_lora_rows = rows
    trainable = []
    for name, p in model.named_parameters():
        is_lora = ".lora_A." in name or ".lora_B." in name
        p.requires_grad_(is_lora)
        if is_lora:
            trainable.append(name)
    return trainable


def _refuse_merge(self, *args: Any, **kwargs: Any) -> None:
    """`merge` of an injected LoRA layer (bound to it): refused, the base weights are the target's."""
    raise UldError(
        "merging the assistant's LoRA into its base weights would change the target: those weights are the "
        "target's own tensors (ULD serves the adapter unmerged; copy the model first to merge a copy)"
    )


def _lean_lora_forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """Forward of one injected peft LoRA layer (bound to it as `layer.forward`).

    In eval mode with the one vanilla adapter of `build_assistant` active, unmerged and enabled,
    computes exactly what peft's `Linear.forward` computes there (dropout is the identity in eval):
    `base_layer(x) + lora_B(lora_A(x)) * scaling`, with peft's dtype casts. Every other case is
    peft's own forward.
    """
    if (
        self.training
        or args
        or kwargs
        or self.merged_adapters
        or self.disable_adapters
        or self.lora_variant
        or self.active_adapters != [ADAPTER_NAME]
    ):
        return type(self).forward(self, x, *args, **kwargs)
    base = self.base_layer
    result = F.linear(x, base.weight, base.bias) if type(base) is nn.Linear else base(x)
    a = self.lora_A[ADAPTER_NAME].weight
    b = self.lora_B[ADAPTER_NAME].weight
    xa = x if x.dtype == a.dtype else x.to(a.dtype)
    skip = self.uld_lora_rows.start
    if skip:  # fused inference (uld.models.uld.fused): rows before `skip` are the target's, no LoRA
        h = F.linear(xa[skip:], a)
        tail = result[skip:]
        if tail.dtype == b.dtype and tail.is_contiguous():
            # One in-place call: tail += scaling * h @ b.T (fewer operator calls per layer per step).
            tail.view(-1, tail.size(-1)).addmm_(h.reshape(-1, h.size(-1)), b.t(), alpha=self.scaling[ADAPTER_NAME])
        else:
            tail.copy_(tail + F.linear(h, b) * self.scaling[ADAPTER_NAME])
        return result
    delta = F.linear(F.linear(xa, a), b) * self.scaling[ADAPTER_NAME]
    out = result + delta
    return out if out.dtype == result.dtype else out.to(result.dtype)
