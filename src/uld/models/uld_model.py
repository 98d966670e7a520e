"""The unlearned model: target logits minus alpha times assistant logits (DESIGN §2).

    logits = z_t - alpha * z_a            on the plausible set of the target
    logits = z_t                          elsewhere (forward: scoring, training, evaluation)
    logits = -inf                         elsewhere, while generating (such tokens are never chosen)

Plausible set (contrastive decoding / DoLa, rate r): token v is plausible when its target
log-probability is at least min(log p_max + log r, log p_(k)), with p_(k) the probability of the
k-th most likely token, k = floor(r * |V|) (k < 1 leaves only the first term, which is the same as
k = 1). Because log p = z - logsumexp(z) shifts every token by the same amount, the test is made on
raw target logits: z_v >= min(z_max + log r, z_(k)). No softmax over the vocabulary is needed.

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
one cache for the target and one for the assistant, so no step recomputes the prefix.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache, GenerationMixin, PreTrainedConfig, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.modeling_utils import slice_logits_to_keep

from uld.errors import UldError
from uld.io import atomic_write_json, replace_dir
from uld.models.assistant import ULDAssistant, build_assistant

CONFIG_NAME = "uld_config.json"
ADAPTER_NAME = "assistant.safetensors"
TARGET_DIR = "target"
FORMAT_VERSION = 1
# Families whose causal-LM logits are exactly `lm_head(decoder(...).last_hidden_state)`: no logit
# scaling or soft-capping (Gemma, Cohere and Granite have them), so the head can be applied to some
# vocabulary rows only. Others always take the full head.
SPARSE_HEAD_FAMILIES = frozenset({"llama", "mistral", "qwen2", "qwen3", "phi3", "gpt_neox", "gpt2"})
# Forward flags that still allow the fused pass when passed as False.
_FALSE_FLAGS = ("output_attentions", "output_hidden_states")


class ULDConfig(PreTrainedConfig):
    """Settings of a ULD model, written to `uld_config.json`.

    alpha: weight of the assistant's logits (paper: 0.75 on TOFU, 0.5 on Harry Potter).
    filter_rate: plausibility rate r (paper: 1e-2); 0 turns the filter off.
    num_layers: K, the assistant's decoder blocks (paper: a quarter of the target's).
    lora_rank / lora_alpha / lora_dropout / target_modules: the assistant's adapter (paper: 32 / 32 /
    0.05 / every linear layer in the blocks); rank 0 means a trainable copy of the K blocks.
    target_name_or_path: where the target comes from (hub id or directory).
    """

    model_type = "uld"
    alpha: float = 0.75
    filter_rate: float = 1e-2
    num_layers: int = 1
    lora_rank: int = 32
    lora_alpha: float = 32.0
    lora_dropout: float = 0.05
    target_modules: list | None = None
    target_name_or_path: str | None = None
    vocab_size: int | None = None


def plausibility_mask(target_logits: torch.Tensor, rate: float) -> torch.Tensor:
    """Plausible set of DESIGN §2 from the target's logits.

    target_logits: (..., V). Returns a bool tensor (..., V), True where
    z_v >= min(z_max + log r, z_(k)), k = max(1, floor(r * V)). `rate` 0 makes every token plausible.
    """
    if rate <= 0:
        return torch.ones_like(target_logits, dtype=torch.bool)
    vocab = target_logits.size(-1)
    # round() guards floor against 0.07 * 100 = 7.000000000000001-style float noise on both sides.
    k = min(vocab, max(1, math.floor(round(rate * vocab, 6))))
    if k == 1:
        z_max = target_logits.amax(dim=-1, keepdim=True)
        threshold = z_max + math.log(rate)
    else:
        top = target_logits.topk(k, dim=-1).values  # (..., k), descending
        threshold = torch.minimum(top[..., :1] + math.log(rate), top[..., k - 1 : k])
    return target_logits >= threshold


def combine_logits(
    target_logits: torch.Tensor,
    assistant_logits: torch.Tensor,
    alpha: float,
    rate: float,
    exclude_implausible: bool = False,
) -> torch.Tensor:
    """ULD logits (..., V) in float32: z_t - alpha z_a on the plausible set, z_t (or -inf) elsewhere."""
    zt = target_logits.float()
    combined = zt - alpha * assistant_logits.float()
    if rate <= 0:
        return combined
    mask = plausibility_mask(zt, rate)
    outside = torch.full_like(zt, float("-inf")) if exclude_implausible else zt
    return torch.where(mask, combined, outside)


def combine_with_head(
    target_logits: torch.Tensor, assistant_hidden: torch.Tensor, head: nn.Linear, alpha: float, rate: float
) -> torch.Tensor:
    """Generation-time ULD logits (..., V) computing the assistant's logits on the plausible set only.

    target_logits (..., V); assistant_hidden (..., H), the assistant's final hidden states; head the
    assistant's output layer. Equals `combine_logits(target_logits, head(assistant_hidden), alpha,
    rate, exclude_implausible=True)` up to float rounding; the head's rows are gathered for the union
    of the plausible sets of every row (the full head is used when that union is over a quarter of
    V: gathering then costs as much as it saves). With V = 32000, hidden 1024, batch 16 on a CPU
    this step takes 5 ms instead of 12 ms (0.4 ms instead of 3.2 ms at batch 1).
    """
    zt = target_logits.float()
    vocab = zt.size(-1)
    mask = plausibility_mask(zt, rate)
    cols = mask.reshape(-1, vocab).any(dim=0).nonzero().squeeze(1)  # (U,)
    if 4 * cols.numel() > vocab:  # a flat target (e.g. untrained): the full head is as cheap
        return (zt - alpha * head(assistant_hidden).float()).masked_fill_(~mask, float("-inf"))
    bias = head.bias.index_select(0, cols) if head.bias is not None else None
    za = F.linear(assistant_hidden, head.weight.index_select(0, cols), bias).float()  # (..., U)
    inside = (zt.index_select(-1, cols) - alpha * za).masked_fill_(~mask.index_select(-1, cols), float("-inf"))
    return torch.full_like(zt, float("-inf")).index_copy_(-1, cols, inside)


def _sparse_head_parts(assistant: nn.Module) -> tuple[nn.Module, nn.Linear] | None:
    """(decoder, head) of the assistant when its logits are `head(decoder output)`; else None."""
    inner = getattr(assistant, "model", None)
    if inner is None or getattr(inner.config, "model_type", None) not in SPARSE_HEAD_FAMILIES:
        return None
    head = inner.get_output_embeddings()
    decoder = inner.get_decoder() if hasattr(inner, "get_decoder") else None
    if type(head) is not nn.Linear or decoder is None or decoder is inner:
        return None
    return decoder, head


class ULDCache(Cache):
    """Two caches, one for the target and one for the assistant, advanced together.

    Queries (sequence length, mask sizes) are answered by the target's cache; every change (crop,
    reorder for beam search, batch selection) is applied to both.
    """

    def __init__(self, target: Cache, assistant: Cache):  # no super().__init__: no layers of its own
        self.target = target
        self.assistant = assistant

    def __repr__(self) -> str:
        return f"ULDCache(target={self.target!r}, assistant={self.assistant!r})"

    def __len__(self) -> int:
        return len(self.target)

    @property
    def layers(self):
        return self.target.layers

    def update(self, *args, **kwargs):
        raise RuntimeError("ULDCache holds two caches; pass .target or .assistant to a model")

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.target.get_seq_length(layer_idx)

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return self.target.get_max_length(layer_idx)

    def get_mask_sizes(self, query_length: int, layer_idx: int) -> tuple[int, int]:
        return self.target.get_mask_sizes(query_length, layer_idx)

    def get_query_offset(self, layer_idx: int = 0) -> int:
        return self.target.get_query_offset(layer_idx)

    def has_previous_state(self, *args, **kwargs) -> bool:
        return self.target.has_previous_state(*args, **kwargs)

    def _both(self, method: str, *args) -> None:
        self.__dict__.pop("fused_kv", None)  # the fused pass's shared buffers (fused.py) are rebuilt
        getattr(self.target, method)(*args)
        getattr(self.assistant, method)(*args)

    def reset(self) -> None:
        self._both("reset")

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._both("reorder_cache", beam_idx)

    def crop(self, tokens_to_remove: int) -> None:
        self._both("crop", tokens_to_remove)

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._both("batch_repeat_interleave", repeats)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._both("batch_select_indices", indices)

    def activate_past_recording(self) -> None:
        self._both("activate_past_recording")

    @property
    def is_compileable(self) -> bool:
        return False

    @property
    def is_initialized(self) -> bool:
        return self.target.is_initialized and self.assistant.is_initialized

    @property
    def is_croppable(self) -> bool:
        return self.target.is_croppable and self.assistant.is_croppable

    @property
    def is_sliding(self) -> list[bool]:
        return self.target.is_sliding

    @property
    def is_linear(self) -> list[bool]:
        return self.target.is_linear

    @property
    def is_dummy(self) -> list[bool]:
        return self.target.is_dummy


class ULDForCausalLM(PreTrainedModel, GenerationMixin):
    """`target - alpha * assistant` with the plausibility filter; a causal LM like any other.

    forward(input_ids (B, T), attention_mask (B, T), position_ids (B, T), labels (B, T), cache,
    use_cache, logits_to_keep) -> CausalLMOutputWithPast(loss, logits (B, T', V) float32, cache).
    """

    config_class = ULDConfig
    base_model_prefix = "uld"
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True

    def __init__(
        self,
        target: PreTrainedModel,
        assistant: ULDAssistant,
        alpha: float = 0.75,
        filter_rate: float = 1e-2,
    ):
        vocab = _check_pair(target, assistant)
        acfg = getattr(assistant, "assistant_config", {})
        tcfg = target.config
        config = ULDConfig(
            alpha=float(alpha),
            filter_rate=float(filter_rate),
            num_layers=int(acfg.get("num_layers", 1)),
            lora_rank=int(acfg.get("lora_rank", 0)),
            lora_alpha=float(acfg.get("lora_alpha", 0)),
            lora_dropout=float(acfg.get("lora_dropout", 0)),
            target_modules=acfg.get("target_modules"),
            target_name_or_path=getattr(target, "name_or_path", None) or None,
            vocab_size=vocab,
            bos_token_id=getattr(tcfg, "bos_token_id", None),
            eos_token_id=getattr(tcfg, "eos_token_id", None),
            pad_token_id=getattr(tcfg, "pad_token_id", None),
        )
        super().__init__(config)
        self.target = target
        self.assistant = assistant
        self.alpha = alpha
        self.filter_rate = filter_rate
        # Inference shares one pass through the first K blocks where the family allows (fused.py);
        # set False to run the two models separately (e.g. to compare).
        self.fused = True
        if getattr(target, "generation_config", None) is not None:
            self.generation_config = copy.deepcopy(target.generation_config)
        # The submodules' train/eval modes are left as they are: a training loop may wrap its
        # assistant to save a checkpoint and keep training. Call `.eval()` before decoding.

    # -- settings ---------------------------------------------------------------------------
    @property
    def alpha(self) -> float:
        return self.config.alpha

    @alpha.setter
    def alpha(self, value: float) -> None:
        if not math.isfinite(float(value)):
            raise UldError(f"alpha must be a finite number, got {value!r}")
        self.config.alpha = float(value)

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
        # Only plain calls are fused (generate adds return_dict; attentions or hidden states asked
        # for take the separate path, which returns what each family returns).
        plain = all(k == "return_dict" or (k in _FALSE_FLAGS and not v) for k, v in kwargs.items())
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
        common = dict(attention_mask=attention_mask, position_ids=position_ids, use_cache=use_cache, **kwargs)
        # Both models see the same mask and position ids: left-padded batches decode like single
        # prompts only then (DESIGN §5).
        t_out = self.target(input_ids=input_ids, inputs_embeds=inputs_embeds, cache=t_cache,
                            logits_to_keep=logits_to_keep, **common)
        parts = None
        if exclude_implausible and self.filter_rate > 0:
            parts = _sparse_head_parts(self.assistant)
        if parts is not None:
            # Generation: implausible tokens get -inf whatever the assistant says, so the head is
            # applied to the plausible tokens' rows only (module docstring).
            decoder, head = parts
            a_out = decoder(input_ids=input_ids, inputs_embeds=inputs_embeds, cache=a_cache, **common)
            hidden = slice_logits_to_keep(a_out.last_hidden_state, logits_to_keep)
            return self._combine_hidden(t_out.logits, hidden, head, exclude_implausible)
        a_out = self.assistant(input_ids=input_ids, inputs_embeds=inputs_embeds, cache=a_cache,
                               logits_to_keep=logits_to_keep, **common)
        return combine_logits(t_out.logits, a_out.logits, self.alpha, self.filter_rate, exclude_implausible)

    def _combine_hidden(self, t_logits, hidden, head: nn.Module, exclude_implausible: bool) -> torch.Tensor:
        """ULD logits from the target's logits and the assistant's final hidden states: while
        generating with the filter on, the head runs on the plausible rows only (`combine_with_head`)."""
        if exclude_implausible and self.filter_rate > 0:
            return combine_with_head(t_logits, hidden, head, self.alpha, self.filter_rate)
        return combine_logits(t_logits, head(hidden), self.alpha, self.filter_rate, exclude_implausible)

    def _fused_pass(self):
        """The fused inference pass (uld.models.fused) when this pair allows it, else None.

        Built once per (target, assistant) and checked on every call: the assistant must be in eval
        mode, `fused` not switched off, and its blocks must still share the target's tensors.
        """
        if not self.fused or self.assistant.training:
            return None
        from uld.models.fused import build_fused

        key = (id(self.target), id(self.assistant))
        cached = self.__dict__.get("_fused_cache")
        if cached is None or cached[0] != key:
            cached = (key, build_fused(self.target, self.assistant))
            self.__dict__["_fused_cache"] = cached
        pair = cached[1]
        return pair if pair is not None and pair.still_shared() else None

    def new_cache(self) -> ULDCache:
        """An empty cache pair for `forward(..., cache=..., use_cache=True)`."""
        target_cfg = self.target.config.get_text_config(decoder=True)
        return ULDCache(DynamicCache(config=target_cfg), DynamicCache(config=self.assistant.config))

    # -- generation -------------------------------------------------------------------------
    def _prepare_cache_for_generation(self, generation_config, model_kwargs, *args, **kwargs) -> None:
        if model_kwargs.get("cache") is not None or generation_config.use_cache is False:
            return super()._prepare_cache_for_generation(generation_config, model_kwargs, *args, **kwargs)
        model_kwargs["cache"] = self.new_cache()

    def prepare_inputs_for_generation(self, *args, **kwargs) -> dict:
        inputs = super().prepare_inputs_for_generation(*args, **kwargs)
        inputs["exclude_implausible"] = True  # in generation, implausible tokens are never chosen
        return inputs

    # -- save / load ------------------------------------------------------------------------
    def save_pretrained(  # type: ignore[override]
        self, save_directory: str | os.PathLike, save_target: bool = False, tokenizer=None, **_: Any
    ) -> Path:
        """Write `uld_config.json`, `assistant.safetensors`, and `target/` when asked or needed.

        The target is saved when `save_target` is true or when it has no loadable source (no hub id
        or existing directory). `tokenizer`, when given, is saved beside them. Each file is written
        atomically; `uld_config.json` last, so a directory with it is complete.
        """
        from safetensors.torch import save_file

        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        source = _target_source(self.target)
        if save_target or source is None:
            tmp = Path(tempfile.mkdtemp(dir=out, prefix=".target.", suffix=".tmp"))
            self.target.save_pretrained(tmp)
            replace_dir(tmp, out / TARGET_DIR)
            source_entry, saved = TARGET_DIR, True
        else:
            source_entry, saved = source, False
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in self.assistant.adapter_state_dict().items()}
        fd, tmp_file = tempfile.mkstemp(dir=out, prefix=f".{ADAPTER_NAME}.", suffix=".tmp")
        os.close(fd)
        try:
            save_file(tensors, tmp_file, metadata={"format": "pt"})
            os.replace(tmp_file, out / ADAPTER_NAME)
        finally:
            if os.path.exists(tmp_file):
                os.unlink(tmp_file)
        if tokenizer is not None:
            tokenizer.save_pretrained(out)
        acfg = self.assistant.assistant_config
        atomic_write_json(
            out / CONFIG_NAME,
            {
                "format_version": FORMAT_VERSION,
                "alpha": self.alpha,
                "filter_rate": self.filter_rate,
                "num_layers": acfg["num_layers"],
                "lora_rank": acfg["lora_rank"],
                "lora_alpha": acfg["lora_alpha"],
                "lora_dropout": acfg["lora_dropout"],
                "target_modules": acfg.get("target_modules"),
                "target_name_or_path": source_entry,
                "target_saved": saved,
                "target_class": type(self.target).__name__,
                "vocab_size": self.config.vocab_size,
            },
        )
        return out

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls, path: str | os.PathLike, device: str | None = None, dtype: str | None = None, **_: Any
    ) -> ULDForCausalLM:
        """Rebuild a saved ULD model: its target, the assistant with its adapter, alpha and rate."""
        from uld.models.loading import load_causal_lm

        root = Path(path)
        cfg = _read_config(root)
        adapter = _read_adapter(root / ADAPTER_NAME)
        src = cfg["target_name_or_path"]
        target_path = str((root / TARGET_DIR).resolve()) if cfg.get("target_saved") else src
        target = load_causal_lm(target_path, dtype=dtype)
        _check_tokenizers(root, target_path)
        vocab = target.get_output_embeddings().weight.shape[0]
        if cfg.get("vocab_size") not in (None, vocab):
            raise UldError(
                f"the target at {target_path!r} has {vocab} output tokens but the ULD model in "
                f"{str(root)!r} was built for {cfg['vocab_size']}"
            )
        assistant = build_assistant(
            target,
            num_layers=cfg["num_layers"],
            lora_rank=cfg["lora_rank"],
            lora_alpha=cfg["lora_alpha"],
            lora_dropout=cfg["lora_dropout"],
            target_modules=cfg.get("target_modules"),
        )
        assistant.load_adapter_state_dict(adapter)
        model = cls(target, assistant, alpha=cfg["alpha"], filter_rate=cfg["filter_rate"])
        model.config.target_name_or_path = target_path
        if device:
            model.to(device)
        return model.eval()


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


def _target_source(target: nn.Module) -> str | None:
    """The target's hub id or absolute directory, or None when it cannot be loaded from anywhere."""
    src = getattr(target, "name_or_path", "") or getattr(target.config, "_name_or_path", "") or ""
    if not src:
        return None
    p = Path(src)
    if p.is_dir():
        return str(p.resolve()) if (p / "config.json").is_file() else None
    if re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", src) and not src.startswith((".", "/")):
        return src  # a hub id
    return None


def _read_config(root: Path) -> dict:
    path = root / CONFIG_NAME
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UldError(f"{str(root)!r} is not a ULD directory: {CONFIG_NAME} is missing") from None
    except (OSError, ValueError) as e:
        raise UldError(f"{str(path)!r} is not valid JSON: {e}") from e
    required = ("alpha", "filter_rate", "num_layers", "lora_rank", "target_name_or_path")
    missing = [k for k in required if k not in cfg] if isinstance(cfg, dict) else list(required)
    if missing:
        raise UldError(f"{str(path)!r} lacks the keys {missing}")
    cfg.setdefault("lora_alpha", 32)
    cfg.setdefault("lora_dropout", 0.05)
    return cfg


def _read_adapter(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise UldError(f"the ULD directory {str(path.parent)!r} has no adapter file {path.name}")
    try:
        return load_file(str(path))  # safetensors: no unpickling
    except Exception as e:
        raise UldError(f"the adapter file {str(path)!r} is corrupt or not safetensors ({e})") from e


def _check_tokenizers(root: Path, target_path: str) -> None:
    """When the ULD directory and the target both ship a tokenizer, their vocabularies must agree."""
    tdir = Path(target_path)
    has = lambda p: (p / "tokenizer.json").is_file() or (p / "tokenizer_config.json").is_file()  # noqa: E731
    if not (has(root) and tdir.is_dir() and has(tdir)) or root.resolve() == tdir.resolve():
        return
    from uld.models.loading import load_tokenizer

    a, b = load_tokenizer(root), load_tokenizer(tdir)
    if a.get_vocab() != b.get_vocab():
        raise UldError(
            f"tokenizer mismatch: the tokenizer in {str(root)!r} differs from the target's in {target_path!r}"
        )
