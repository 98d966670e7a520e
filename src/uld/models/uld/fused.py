"""Fused inference: the assistant's K blocks run in the same calls as the target's first K blocks.

The assistant *is* the target's first K blocks (same tensors) plus LoRA, and both models read the
same input. So at inference the two can share one pass through those blocks: stack the target's
and the assistant's hidden states along the batch, run block i once on 2B rows (each weight read
once for both models; one module call instead of two), add the LoRA update to the assistant's
rows only, and let the target's rows continue alone through blocks K..N-1. Each half keeps its
own KV cache (`ULDCache.target` / `.assistant`), so caches, beam search and saving are unchanged.

What this saves per decoding step: the assistant's embedding, rotary, mask and K block calls (its
per-call overhead dominates small models on a CPU) and, on memory-bound hardware, the second read
of the first K blocks' weights. What it costs: the stacking and a concatenation of the two KV
caches of each of the K layers per step.

The fused pass is built from the target's own modules, without touching them: a shallow copy of
the causal LM and of its decoder whose block list starts with `FusedBlock`s (wrapping the
assistant's blocks, LoRA included) and continues with the target's own blocks K..N-1. The
family's own `forward` runs it (embeddings, positions, masks, norm, head of the target rows).

Used only where it is exact by construction — no gradients, the assistant in eval mode, and a
family whose blocks take `(hidden, attention_mask=, position_ids=, cache=, use_cache=,
position_embeddings=)` with batch-first tensors and full attention (`FUSED_FAMILIES`, no sliding
window). Exact up to rounding: a matrix product over the 2B stacked rows may accumulate a row in
another order than the product over B rows (MKL's AVX2 kernels choose their blocking from the
row count), so results differ by a few units in the last place of their magnitude.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from uld.models.assistant import ULDAssistant
from uld.models.blocks import find_decoder_blocks
from uld.models.uld.cache import ULDCache

FUSED_FAMILIES = frozenset({"llama", "mistral", "qwen2", "qwen3", "phi3"})


@dataclass
class _CallState:
    """What one fused call needs and produces (set by `FusedPair.__call__`, cleared after)."""

    rows: int = 0
    target_cache: Any = None
    assistant_cache: Any = None
    slots: dict[int, KVSlot] | None = None  # layer index -> its buffer: `ULDCache.fused_kv`
    assistant_hidden: torch.Tensor | None = None
    doubled: dict = field(default_factory=dict)  # id(tensor) -> (tensor, stacked twice), this call only


class KVSlot:
    """Keys and values of one fused layer for both models in one buffer (2B, heads, capacity, dim).

    The target's and the assistant's `DynamicLayer`s hold views of its first and last B rows, so
    the caches stay complete and usable on their own. Appending a step writes into spare capacity
    instead of concatenating both caches and then both halves again (three copies of the whole
    cache per layer per step); capacity grows by a quarter (at least 32 positions) when full.
    """

    __slots__ = ("keys", "values", "length", "views")

    def __init__(self, keys: torch.Tensor, values: torch.Tensor):
        self.length = keys.size(-2)
        self.keys = self._alloc(keys, self.length)
        self.values = self._alloc(values, self.length)
        self.keys[..., : self.length, :].copy_(keys)
        self.values[..., : self.length, :].copy_(values)
        self.views: tuple = ()

    @staticmethod
    def _alloc(like: torch.Tensor, length: int) -> torch.Tensor:
        capacity = length + max(32, length // 4)
        return like.new_empty((*like.shape[:-2], capacity, like.size(-1)))

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + keys.size(-2)
        if end > self.keys.size(-2):
            for name in ("keys", "values"):
                old = getattr(self, name)
                new = self._alloc(old, end)
                new[..., : self.length, :].copy_(old[..., : self.length, :])
                setattr(self, name, new)
        self.keys[..., self.length : end, :].copy_(keys)
        self.values[..., self.length : end, :].copy_(values)
        self.length = end
        return self.keys[..., :end, :], self.values[..., :end, :]

    def owns(self, t_layer: Any, a_layer: Any) -> bool:
        """Whether both layers still hold the views this slot gave them (no reorder, crop or reset since)."""
        v = self.views
        return bool(v) and t_layer.keys is v[0] and t_layer.values is v[1] and a_layer.keys is v[2] \
            and a_layer.values is v[3]


def _plain_dynamic(cache: Any, layer_idx: int) -> Any:
    """The cache's layer `layer_idx` when it is a plain, initialised `DynamicLayer` on a cache
    that does not offload; else None (the slot is then not used)."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    if getattr(cache, "offloading", False) or layers is None or len(layers) <= layer_idx:
        return None
    layer = layers[layer_idx]
    return layer if type(layer) is DynamicLayer and layer.is_initialized else None


class _PairedLayerCache:
    """The cache a fused block's attention sees: rows [:B] belong to the target's cache, [B:] to
    the assistant's; `update` returns both halves' full keys and values, stacked (from a `KVSlot`
    where the two layers are plain dynamic layers, else by updating each and concatenating)."""

    def __init__(self, state: _CallState):
        self.state = state

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        st = self.state
        b = st.rows
        t_layer = _plain_dynamic(st.target_cache, layer_idx)
        a_layer = _plain_dynamic(st.assistant_cache, layer_idx)
        slot = st.slots.get(layer_idx) if st.slots is not None else None
        if slot is not None and t_layer is not None and a_layer is not None and slot.owns(t_layer, a_layer):
            keys, values = slot.append(key_states, value_states)
        else:
            kt, vt = st.target_cache.update(key_states[:b], value_states[:b], layer_idx, *args, **kwargs)
            ka, va = st.assistant_cache.update(key_states[b:], value_states[b:], layer_idx, *args, **kwargs)
            keys, values = torch.cat([kt, ka]), torch.cat([vt, va])
            t_layer = _plain_dynamic(st.target_cache, layer_idx)
            a_layer = _plain_dynamic(st.assistant_cache, layer_idx)
            if st.slots is None or t_layer is None or a_layer is None:
                return keys, values
            slot = st.slots[layer_idx] = KVSlot(keys, values)
            keys, values = slot.keys[..., : slot.length, :], slot.values[..., : slot.length, :]
        t_layer.keys, t_layer.values = keys[:b], values[:b]
        a_layer.keys, a_layer.values = keys[b:], values[b:]
        slot.views = (t_layer.keys, t_layer.values, a_layer.keys, a_layer.values)
        return keys, values

    def __getattr__(self, name: str):  # lengths, mask sizes...: the target's (both advance together)
        return getattr(self.state.target_cache, name)


def _twice(x: Any, rows: int, memo: dict) -> Any:
    """A batch-first tensor (rows, ...) stacked on itself (once per call: `memo`); broadcast
    (1, ...) tensors and None kept."""
    if isinstance(x, torch.Tensor) and x.dim() > 0 and x.size(0) == rows and rows > 1:
        hit = memo.get(id(x))
        if hit is None or hit[0] is not x:
            hit = memo[id(x)] = (x, torch.cat([x, x]))
        return hit[1]
    if isinstance(x, tuple):
        return tuple(_twice(t, rows, memo) for t in x)
    return x


class FusedBlock(nn.Module):
    """Block i < K of the fused pass: the assistant's block (shared weights + LoRA) on 2B rows."""

    def __init__(self, block: nn.Module, state: _CallState, first: bool, last: bool):
        super().__init__()
        self.block = block
        self.first, self.last = first, last
        self.state = state  # a plain object, not a submodule

    def forward(self, hidden_states, attention_mask=None, position_ids=None, cache=None, use_cache=False,
                position_embeddings=None, **kwargs):
        st: _CallState = self.state
        b = st.rows
        if self.first:  # both models embed the same tokens with the same table
            hidden_states = torch.cat([hidden_states, hidden_states])
        out = self.block(
            hidden_states,
            attention_mask=_twice(attention_mask, b, st.doubled),
            position_ids=_twice(position_ids, b, st.doubled),
            cache=_PairedLayerCache(st) if cache is not None else None,
            use_cache=use_cache,
            position_embeddings=_twice(position_embeddings, b, st.doubled),
            **kwargs,
        )
        if self.last:
            st.assistant_hidden = out[b:]
            return out[:b]
        return out


def _shallow(module: nn.Module) -> nn.Module:
    """A new module object sharing `module`'s parameters, buffers and hooks, with its own child dict."""
    clone = copy.copy(module)
    clone._modules = dict(module._modules)
    return clone


class FusedPair:
    """Callable fused pass of a (target, assistant) pair; build with `build_fused` (None when the
    pair cannot be fused)."""

    def __init__(self, lm: nn.Module, norm: nn.Module, state: _CallState, assistant: ULDAssistant,
                 probe: tuple[nn.Module, str, nn.Module, str]):
        self.lm, self.norm, self.state, self.assistant = lm, norm, state, assistant
        # (target's first block, the name of one of its weights, assistant's first block, the name
        # of the assistant's tensor for it): looked up on every call, so replaced modules or
        # parameters are seen.
        self.probe = probe

    def still_shared(self) -> bool:
        """A cheap per-call check that the blocks still share that weight (not copied or moved
        apart since the build); `shares_blocks` is the full check, at build."""
        t_block, t_name, a_block, a_name = self.probe
        return t_block.get_parameter(t_name).data_ptr() == a_block.get_parameter(a_name).data_ptr()

    def __call__(self, input_ids, inputs_embeds, attention_mask, position_ids, cache: ULDCache | None, use_cache,
                 logits_to_keep):
        """(target logits (B, T', V), assistant final hidden states (B, T, H), after the final norm)."""
        st = self.state
        rows = (input_ids if input_ids is not None else inputs_embeds).size(0)
        st.rows = rows
        st.target_cache = cache.target if cache is not None else None
        st.assistant_cache = cache.assistant if cache is not None else None
        st.slots = cache.fused_kv if cache is not None else None
        self.assistant.lora_rows.start = rows  # LoRA on the assistant's rows only
        try:
            out = self.lm(
                input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                position_ids=position_ids, cache=st.target_cache, use_cache=use_cache, logits_to_keep=logits_to_keep,
            )
            hidden = self.norm(st.assistant_hidden)
        finally:
            self.assistant.lora_rows.start = 0
            st.target_cache = st.assistant_cache = st.assistant_hidden = st.slots = None
            st.doubled.clear()
        return out.logits, hidden


def can_fuse(target: nn.Module, assistant: ULDAssistant) -> bool:
    """Whether the pair's family and settings allow the fused pass (module docstring)."""
    cfg = getattr(target, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) not in FUSED_FAMILIES:
        return False
    if getattr(cfg, "sliding_window", None) or getattr(cfg, "use_sliding_window", False):
        return False
    if any(t != "full_attention" for t in getattr(cfg, "layer_types", None) or ()):
        return False
    if assistant.assistant_config.get("lora_rank", 0) <= 0:
        return False  # a private copy of the blocks: they are not the target's weights
    decoder = target.get_decoder() if hasattr(target, "get_decoder") else None
    return decoder is not None and isinstance(getattr(decoder, "norm", None), nn.Module)


def shares_blocks(target: nn.Module, assistant: ULDAssistant) -> bool:
    """Whether the assistant's K blocks still hold the target's tensors (not moved apart, not copied)."""
    path, blocks = find_decoder_blocks(target)
    a_blocks = assistant.model.get_submodule(path)
    theirs = {p.data_ptr() for i in range(assistant.assistant_config["num_layers"]) for p in blocks[i].parameters()}
    ours = [p for n, p in a_blocks.named_parameters() if ".lora_" not in n]
    return bool(ours) and all(p.data_ptr() in theirs for p in ours)


def build_fused(target: nn.Module, assistant: ULDAssistant) -> FusedPair | None:
    """The fused pass over `target`'s and `assistant`'s modules, or None when `can_fuse` is false."""
    if not can_fuse(target, assistant) or not shares_blocks(target, assistant):
        return None
    path, blocks = find_decoder_blocks(target)
    k = assistant.assistant_config["num_layers"]
    a_blocks = assistant.model.get_submodule(path)
    state = _CallState()
    fused_blocks = [FusedBlock(a_blocks[i], state, first=i == 0, last=i == k - 1) for i in range(k)]

    # Shallow copies along the path to the block list, so the target's own modules are untouched.
    names = path.split(".")
    lm = _shallow(target)
    parent = lm
    for name in names[:-1]:
        child = _shallow(parent._modules[name])
        parent._modules[name] = child
        parent = child
    parent._modules[names[-1]] = nn.ModuleList(fused_blocks + list(blocks)[k:])
    norm = assistant.model.get_decoder().norm
    t_name = next(n for n, _ in blocks[0].named_parameters())
    a_name = next(n for n, _ in a_blocks[0].named_parameters() if n.replace(".base_layer", "") == t_name)
    return FusedPair(lm, norm, state, assistant, (blocks[0], t_name, a_blocks[0], a_name))
