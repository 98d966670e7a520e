"""`ULDForCausalLM`: target logits minus w times assistant logits, a causal LM like any other.

Why the generation-time exclusion lives in `forward` (switched on by `prepare_inputs_for_generation`)
and not in a `LogitsProcessor`: a processor only sees the combined scores, but the plausible set is
a function of the *target's* logits, which only `forward` has. The flag keeps `forward` stateless and
keeps the ordinary processors (temperature, top-k, top-p, repetition penalty) working on top: they
all leave -inf at -inf.

While generating, only the plausible tokens' assistant logits matter (the rest are -inf), so for
families whose logits are exactly `lm_head(last hidden state)` (`SPARSE_HEAD_FAMILIES`) the
assistant's head is applied to the plausible tokens' rows only: a few dozen of the vocabulary's
rows instead of all of them, the same values up to float rounding.

`ULDForCausalLM` is a `PreTrainedModel` + `GenerationMixin`, so `generate` is transformers' own
(greedy, sampling, beams, stopping at EOS, left-padded batches). Its cache is a `ULDCache` holding
one cache for the target and one for the assistant, so no step recomputes the prefix; with
`cache_implementation="static"` both are static caches.
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache, GenerationMixin, PreTrainedModel, StaticCache
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.modeling_utils import slice_logits_to_keep

from uld.errors import UldError
from uld.models.assistant import ULDAssistant
from uld.models.defaults import ASSISTANT_WEIGHT, FILTER_RATE
from uld.models.uld.cache import ULDCache
from uld.models.uld.combine import combine_logits, combine_with_head, sparse_head_parts
from uld.models.uld.config import ULDConfig, target_fields

# Forward flags that still allow the fused pass when passed as False.
_FALSE_FLAGS = ("output_attentions", "output_hidden_states")


class ULDForCausalLM(PreTrainedModel, GenerationMixin):
    """`target - w * assistant` with the plausibility filter (w: `assistant_weight`).

    forward(input_ids (B, T), attention_mask (B, T), position_ids (B, T), labels (B, T), cache,
    use_cache, logits_to_keep) -> CausalLMOutputWithPast(loss, logits (B, T', V) float32, cache).
    The model has no hidden states or attentions of its own: asking for them is an error (ask
    `model.target` or `model.assistant`).
    """

    config_class = ULDConfig
    base_model_prefix = "uld"
    main_input_name = "input_ids"
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True

    def __init__(
        self,
        target: PreTrainedModel,
        assistant: ULDAssistant,
        assistant_weight: float = ASSISTANT_WEIGHT,
        filter_rate: float = FILTER_RATE,
        *,
        alpha: float | None = None,
    ):
        if alpha is not None:  # the name before `assistant_weight`
            warnings.warn("ULDForCausalLM(alpha=...) is now assistant_weight=...", FutureWarning, stacklevel=2)
            assistant_weight = alpha
        vocab = _check_pair(target, assistant)
        acfg = getattr(assistant, "assistant_config", {})
        fields = target_fields(target.config)
        fields["vocab_size"] = vocab
        config = ULDConfig(
            num_layers=int(acfg.get("num_layers", 1)),
            lora_rank=int(acfg.get("lora_rank", 0)),
            lora_alpha=float(acfg.get("lora_alpha", 0)),
            lora_dropout=float(acfg.get("lora_dropout", 0)),
            target_modules=acfg.get("target_modules"),
            norm_scale=float(acfg.get("norm_scale", 0.0)),
            target_name_or_path=getattr(target, "name_or_path", None) or None,
            **fields,
        )
        super().__init__(config)
        self.target = target
        self.assistant = assistant
        self.assistant_weight = assistant_weight
        self.filter_rate = filter_rate
        # Inference shares one pass through the first K blocks where the family allows (fused.py);
        # set False to run the two models separately (e.g. to compare).
        self.fused = True
        self._fused: tuple[tuple[int, int], Any] | None = None
        if getattr(target, "generation_config", None) is not None:
            self.generation_config = copy.deepcopy(target.generation_config)
        # The submodules' train/eval modes are left as they are: a training loop may wrap its
        # assistant to save a checkpoint and keep training. Call `.eval()` before decoding.

    # -- settings ---------------------------------------------------------------------------
    @property
    def assistant_weight(self) -> float:
        """w in `target - w * assistant` (the paper's alpha)."""
        return self.config.assistant_weight

    @assistant_weight.setter
    def assistant_weight(self, value: float) -> None:
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise UldError(f"assistant_weight must be a number, got {value!r}") from None
        if not math.isfinite(value) or value < 0:
            raise UldError(f"assistant_weight must be a finite number >= 0, got {value!r}")
        self.config.assistant_weight = value

    @property
    def filter_rate(self) -> float:
        return self.config.filter_rate

    @filter_rate.setter
    def filter_rate(self, value: float) -> None:
        if not 0.0 <= float(value) <= 1.0:
            raise UldError(f"filter_rate must be in [0, 1] (0 turns the filter off), got {value!r}")
        self.config.filter_rate = float(value)

    def get_input_embeddings(self) -> nn.Module:
        return self.target.get_input_embeddings()

    # -- state dict: each tensor once ----------------------------------------------------------
    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """The target's tensors once, under `target.*`, and the assistant's own (LoRA, or the private
        block copy) under `assistant.*`: the assistant's other entries are the target's tensors
        and are left out, so generic savers (safetensors, `save_pretrained`, accelerate) see no
        shared storage. `load_state_dict` accepts it back (the omitted keys are not missing)."""
        full = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", args[1] if len(args) > 1 else "")
        own = {f"{prefix}assistant.model.{n}" for n in self.assistant.adapter_state_dict()}
        shared = [k for k in full if k.startswith(f"{prefix}assistant.") and k not in own]
        for k in shared:
            del full[k]
        return full

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        own = {f"assistant.model.{n}" for n in self.assistant.adapter_state_dict()}
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = [k for k in result.missing_keys if not k.startswith("assistant.") or k in own]
        if strict and (missing or result.unexpected_keys):
            raise UldError(
                f"the state dict does not fit this ULD model: {len(missing)} tensors missing (e.g. {missing[:2]}), "
                f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:2]})"
            )
        return result

    # -- forward ----------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        cache: ULDCache | None = None,
        past_key_values: ULDCache | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        inputs_embeds: torch.Tensor | None = None,
        exclude_implausible: bool = False,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """Combined logits; `exclude_implausible` (set while generating) puts -inf outside the set."""
        for flag in _FALSE_FLAGS:
            if kwargs.get(flag):
                raise UldError(
                    f"ULDForCausalLM has no {flag.removeprefix('output_')} of its own (its logits combine two "
                    f"models): call model.target or model.assistant with {flag}=True"
                )
        if cache is None:
            cache = past_key_values
        if cache is not None and not isinstance(cache, ULDCache):
            raise TypeError("ULDForCausalLM needs a ULDCache (one cache per model), not " + type(cache).__name__)
        if use_cache is None:
            use_cache = cache is not None
        if use_cache and cache is None:
            cache = self.new_cache()
        a_cache = cache.assistant if use_cache else None
        t_cache = cache.target if use_cache else None
        # Only plain calls are fused (generate adds return_dict).
        plain = all(k == "return_dict" or k in _FALSE_FLAGS for k in kwargs)
        fused = self._fused_pass() if plain and not torch.is_grad_enabled() else None
        if fused is not None:
            # Inference: one pass through the shared first K blocks for both models (fused.py).
            t_logits, hidden = fused(input_ids, inputs_embeds, attention_mask, position_ids,
                                     cache if use_cache else None, bool(use_cache), logits_to_keep)
            hidden = slice_logits_to_keep(hidden, logits_to_keep)
            logits = self._combine_hidden(t_logits, hidden, self.assistant.model.get_output_embeddings(),
                                          exclude_implausible)
        else:
            logits = self._separate_forward(input_ids, inputs_embeds, attention_mask, position_ids, t_cache,
                                            a_cache, bool(use_cache), logits_to_keep, exclude_implausible, **kwargs)
        loss = None
        if labels is not None:
            # Causal LM loss: position t predicts token t+1, -100 is ignored (as in transformers).
            shift = logits[:, :-1].reshape(-1, logits.size(-1))
            loss = F.cross_entropy(shift, labels[:, 1:].reshape(-1).to(shift.device), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=cache if use_cache else None)

    def _separate_forward(self, input_ids, inputs_embeds, attention_mask, position_ids, t_cache, a_cache,
                          use_cache: bool, logits_to_keep, exclude_implausible: bool, **kwargs) -> torch.Tensor:
        """Target and assistant each through their own forward (training, and families not fused)."""
        kwargs = {k: v for k, v in kwargs.items() if k not in _FALSE_FLAGS}
        common = dict(attention_mask=attention_mask, position_ids=position_ids, use_cache=use_cache, **kwargs)
        # Both models see the same mask and position ids: left-padded batches decode like single
        # prompts only then.
        t_out = self.target(input_ids=input_ids, inputs_embeds=inputs_embeds, cache=t_cache,
                            logits_to_keep=logits_to_keep, **common)
        parts = None
        if exclude_implausible and self.filter_rate > 0:
            parts = sparse_head_parts(self.assistant)
        if parts is not None:
            # Generation: implausible tokens get -inf whatever the assistant says, so the head is
            # applied to the plausible tokens' rows only (module docstring).
            decoder, head = parts
            a_out = decoder(input_ids=input_ids, inputs_embeds=inputs_embeds, cache=a_cache, **common)
            hidden = slice_logits_to_keep(a_out.last_hidden_state, logits_to_keep)
            return self._combine_hidden(t_out.logits, hidden, head, exclude_implausible)
        a_out = self.assistant(input_ids=input_ids, inputs_embeds=inputs_embeds, cache=a_cache,
                               logits_to_keep=logits_to_keep, **common)
        return combine_logits(t_out.logits, a_out.logits, self.assistant_weight, self.filter_rate, exclude_implausible)

    def _combine_hidden(self, t_logits, hidden, head: nn.Module, exclude_implausible: bool) -> torch.Tensor:
        """ULD logits from the target's logits and the assistant's final hidden states: while
        generating with the filter on, the head runs on the plausible rows only (`combine_with_head`)."""
        w = self.assistant_weight
        if exclude_implausible and self.filter_rate > 0:
            return combine_with_head(t_logits, hidden, head, w, self.filter_rate)
        return combine_logits(t_logits, head(hidden), w, self.filter_rate, exclude_implausible)

    def _fused_pass(self):
        """The fused inference pass (uld.models.uld.fused) when this pair allows it, else None.

        Built once per (target, assistant) and checked on every call: the assistant must be in eval
        mode, `fused` not switched off, and its blocks must still share the target's tensors.
        """
        if not self.fused or self.assistant.training:
            return None
        from uld.models.uld.fused import build_fused

        key = (id(self.target), id(self.assistant))
        if self._fused is None or self._fused[0] != key:
            self._fused = (key, build_fused(self.target, self.assistant))
        pair = self._fused[1]
        return pair if pair is not None and pair.still_shared() else None

    def new_cache(self) -> ULDCache:
        """An empty cache pair for `forward(..., cache=..., use_cache=True)`."""
        target_cfg = self.target.config.get_text_config(decoder=True)
        return ULDCache(DynamicCache(config=target_cfg), DynamicCache(config=self.assistant.config))

    # -- generation -------------------------------------------------------------------------
    def _prepare_cache_for_generation(self, generation_config, model_kwargs, generation_mode, batch_size,
                                      max_cache_length, *args, **kwargs) -> None:
        if model_kwargs.get("cache") is not None or generation_config.use_cache is False:
            return super()._prepare_cache_for_generation(generation_config, model_kwargs, generation_mode,
                                                          batch_size, max_cache_length, *args, **kwargs)
        kind = generation_config.cache_implementation
        if kind in (None, "dynamic", "offloaded"):
            cache = self.new_cache()
            if kind == "offloaded":
                target_cfg = self.target.config.get_text_config(decoder=True)
                cache = ULDCache(DynamicCache(config=target_cfg, offloading=True),
                                 DynamicCache(config=self.assistant.config, offloading=True))
            model_kwargs["cache"] = cache
        elif kind == "static":
            target_cfg = self.target.config.get_text_config(decoder=True)
            model_kwargs["cache"] = ULDCache(StaticCache(config=target_cfg, max_cache_len=max_cache_length),
                                             StaticCache(config=self.assistant.config, max_cache_len=max_cache_length))
        else:
            raise UldError(
                f"cache_implementation={kind!r} is not supported by ULDForCausalLM: use 'dynamic' (the default), "
                "'static' or 'offloaded'"
            )
        if generation_config.is_assistant:  # used as another model's assistant: steps may be rolled back
            model_kwargs["cache"].activate_past_recording()

    def prepare_inputs_for_generation(self, *args, **kwargs) -> dict:
        inputs = super().prepare_inputs_for_generation(*args, **kwargs)
        inputs["exclude_implausible"] = True  # in generation, implausible tokens are never chosen
        return inputs

    # -- save / load (uld.models.uld.io) -------------------------------------------------------
    def save_pretrained(  # type: ignore[override]
        self, save_directory: str | os.PathLike, save_target: bool = False, tokenizer=None, **kwargs: Any
    ):
        """Write a run directory: `config.json` (a `ULDConfig`), the assistant adapter in peft's format
        under `assistant/`, the target's generation config, the tokenizer when given, and the target
        itself under `target/` when `save_target` or when it cannot be found again (see
        `uld.models.uld.io.save_uld`)."""
        from uld.models.uld.io import save_uld

        return save_uld(self, save_directory, save_target=save_target, tokenizer=tokenizer, **kwargs)

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any
    ) -> ULDForCausalLM:
        """Load a run directory: `from_pretrained(run, target=None, dtype=None, device_map=None,
        device=None, ignore_target_mismatch=False)` (see `uld.models.uld.io.load_uld`)."""
        from uld.models.uld.io import load_uld

        if args:
            raise UldError("ULDForCausalLM.from_pretrained takes the run directory and keyword options only")
        return load_uld(cls, pretrained_model_name_or_path, **kwargs)


def _check_pair(target: nn.Module, assistant: nn.Module) -> int:
    """Target and assistant must share one vocabulary and tokenizer; returns the vocabulary size."""
    t_head = target.get_output_embeddings() if hasattr(target, "get_output_embeddings") else None
    inner = getattr(assistant, "model", assistant)
    a_head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if t_head is None or a_head is None:
        raise UldError("the target and the assistant must both be causal LMs with an output head")
    tv, av = t_head.weight.shape[0], a_head.weight.shape[0]
    if tv != av:
        raise UldError(f"vocabulary mismatch: the target predicts {tv} tokens, the assistant {av}")
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        t_id, a_id = getattr(target.config, key, None), getattr(inner.config, key, None)
        if t_id is not None and a_id is not None and t_id != a_id:
            raise UldError(f"tokenizer mismatch: the target's {key} is {t_id}, the assistant's {a_id}")
    return int(tv)
