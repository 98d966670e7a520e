"""Offset unlearning (δ-unlearning; Huang et al. 2024, arXiv 2404.11045).

A small model M_o is trained next to a frozen copy M_o' of its starting point; the target M
stays frozen. The unlearned model's logits are

    logits = logits_M(x) + scale * (logits_Mo(x) - logits_Mo'(x))          (paper eq. 2, scale 1)

so before training (M_o = M_o') it equals the target exactly. The small model must share the
target's vocabulary; by default it is the target's first K decoder blocks (with embeddings,
final norm and head), a real copy.

`OffsetForCausalLM` is a `PreTrainedModel` + `GenerationMixin`: `generate` is transformers' own,
with one KV cache per model (`OffsetCache`), so no step recomputes the prefix.

A saved directory holds `offset_config.json`, `offset/` (the trained small model),
`offset_base/` (its frozen start) and the tokenizer; the target is referenced by hub id or
absolute path. `uld.models.loading.load_model` recognises it by `offset_config.json`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache, GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.modeling_outputs import CausalLMOutputWithPast

from uld.errors import UldError
from uld.io import atomic_write_json
from uld.models.blocks import check_block_count, find_decoder_blocks, truncate_blocks
from uld.models.caches import MultiCache

CONFIG_NAME = "offset_config.json"
OFFSET_DIR = "offset"
BASE_DIR = "offset_base"


def truncated_copy(target: nn.Module, num_layers: int) -> nn.Module:
    """A trainable copy of the target's first `num_layers` decoder blocks, embeddings and head.

    Blocks past K are put in the deepcopy memo as themselves, so they are never duplicated.
    """
    path, blocks = find_decoder_blocks(target)
    k = check_block_count(num_layers, len(blocks), "the offset model")
    memo: dict[int, Any] = {id(b): b for b in list(blocks)[k:]}
    small = copy.deepcopy(target, memo)
    truncate_blocks(small, path, k)
    for p in small.parameters():
        p.requires_grad_(True)
    return small


class OffsetCache(MultiCache):
    """The target's, the offset model's and its frozen start's KV caches, advanced together."""

    def __init__(self, target: Cache, offset: Cache, base: Cache):
        super().__init__(target=target, offset=offset, base=base)


class OffsetForCausalLM(PreTrainedModel, GenerationMixin):
    """target + scale * (offset - offset_base), a causal LM like any other.

    forward(input_ids (B, T), attention_mask (B, T), position_ids (B, T), cache, use_cache,
    logits_to_keep) -> CausalLMOutputWithPast(logits (B, T', V) float32, cache). Only the offset
    model gets gradients.
    """

    base_model_prefix = "offset_unlearning"
    main_input_name = "input_ids"
    _supports_sdpa = True

    def __init__(self, target: nn.Module, offset: nn.Module, base: nn.Module, scale: float = 1.0):
        super().__init__(copy.deepcopy(target.config))
        self.target, self.offset, self.base, self.scale = target, offset, base, float(scale)
        for p in list(target.parameters()) + list(base.parameters()):
            p.requires_grad_(False)
        if getattr(target, "generation_config", None) is not None:
            self.generation_config = copy.deepcopy(target.generation_config)

    def new_cache(self) -> OffsetCache:
        """An empty cache per model, for `forward(..., cache=..., use_cache=True)`."""
        return OffsetCache(*(DynamicCache(config=m.config.get_text_config(decoder=True))
                             for m in (self.target, self.offset, self.base)))

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache: OffsetCache | None = None,
                past_key_values: OffsetCache | None = None, use_cache: bool | None = None,
                logits_to_keep: int | torch.Tensor = 0, **_: Any) -> CausalLMOutputWithPast:
        cache = cache if cache is not None else past_key_values
        if cache is not None and not isinstance(cache, OffsetCache):
            raise TypeError("OffsetForCausalLM needs an OffsetCache (one cache per model), not " + type(cache).__name__)
        if use_cache is None:
            use_cache = cache is not None
        if use_cache and cache is None:
            cache = self.new_cache()
        kw = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                  use_cache=bool(use_cache), logits_to_keep=logits_to_keep)
        part = (lambda name: cache.caches[name]) if use_cache else (lambda name: None)  # noqa: E731
        with torch.no_grad():
            t = self.target(**kw, cache=part("target")).logits.float()
            b = self.base(**kw, cache=part("base")).logits.float()
        o = self.offset(**kw, cache=part("offset")).logits.float()
        return CausalLMOutputWithPast(logits=t + self.scale * (o - b), cache=cache if use_cache else None)

    def _prepare_cache_for_generation(self, generation_config, model_kwargs, *args, **kwargs) -> None:
        if model_kwargs.get("cache") is not None or generation_config.use_cache is False:
            return super()._prepare_cache_for_generation(generation_config, model_kwargs, *args, **kwargs)
        if generation_config.cache_implementation not in (None, "dynamic"):
            raise UldError(f"cache_implementation={generation_config.cache_implementation!r} is not supported by "
                           "OffsetForCausalLM: use 'dynamic' (the default)")
        model_kwargs["cache"] = self.new_cache()

    def save_pretrained(self, out: str | Path, target_name_or_path: str, tokenizer=None) -> Path:
        """Write the two small models, the tokenizer, then `offset_config.json` (last: a dir
        holding it is complete)."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.offset.save_pretrained(out / OFFSET_DIR)
        self.base.save_pretrained(out / BASE_DIR)
        if tokenizer is not None:
            tokenizer.save_pretrained(out)
        atomic_write_json(out / CONFIG_NAME, {"target_name_or_path": target_name_or_path, "scale": self.scale})
        return out

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: str | None = None) -> OffsetForCausalLM:
        from uld.models.loading import load_causal_lm

        root = Path(path)
        try:
            cfg = json.loads((root / CONFIG_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise UldError(f"{str(root)!r} is not a readable offset-unlearning directory: {e}") from e
        target = load_causal_lm(cfg["target_name_or_path"], dtype=dtype)
        offset = load_causal_lm(root / OFFSET_DIR, dtype=dtype)
        base = load_causal_lm(root / BASE_DIR, dtype=dtype)
        return cls(target, offset, base, scale=cfg.get("scale", 1.0)).eval()
