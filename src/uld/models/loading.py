"""Load a tokenizer and a causal LM from a hub id or a local directory."""

from __future__ import annotations

from pathlib import Path

from uld.errors import UldError


def load_tokenizer(name_or_path: str | Path):
    from transformers import AutoTokenizer

    from uld.models.gguf import resolve_gguf

    name_or_path = resolve_gguf(name_or_path)
    try:
        tok = AutoTokenizer.from_pretrained(str(name_or_path))
    except Exception as e:
        raise UldError(f"could not load a tokenizer from {str(name_or_path)!r}: {e}") from e
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def resolve_dtype(dtype):
    """A torch dtype from a `torch.dtype`, its name ("bfloat16", "torch.bfloat16") or "auto" (kept
    as "auto": the checkpoint's own dtype); None stays None. UldError for anything else."""
    import torch

    if dtype is None or isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    name = str(dtype).removeprefix("torch.")
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype):
        raise UldError(f"unknown dtype {dtype!r}: give a torch dtype or its name, e.g. 'float32', 'bfloat16', 'float16'")
    return value


def load_causal_lm(name_or_path: str | Path, dtype=None, device: str | None = None, **options):
    """Load a plain transformers causal LM; one clear error when it cannot be loaded.

    `dtype`: a torch dtype, its name or "auto"; `options` go to `from_pretrained` (e.g. device_map).
    A `.gguf` file is converted once into a cached model directory (`uld.models.gguf`)."""
    from transformers import AutoModelForCausalLM

    from uld.models.gguf import resolve_gguf

    name_or_path = resolve_gguf(name_or_path, log=_stderr)
    kwargs = {k: v for k, v in options.items() if v is not None}
    if dtype is not None:
        kwargs["dtype"] = resolve_dtype(dtype)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(name_or_path), **kwargs)
    except Exception as e:
        raise UldError(f"could not load a causal language model from {str(name_or_path)!r}: {e}") from e
    if device:
        model.to(device)
    model.eval()
    return model


def load_model(name_or_path: str | Path, device: str | None = None, dtype: str | None = None, target: str | None = None,
               ignore_target_mismatch: bool = False):
    """Load any model uld can evaluate or generate with, and its tokenizer.

    - a ULD run directory (`config.json` with model_type "uld", or an older `uld_config.json`):
      `ULDForCausalLM.from_pretrained` (`target` and `ignore_target_mismatch` are passed to it);
    - an offset-unlearning directory (has `offset_config.json`): `OffsetForCausalLM`;
    - a peft adapter directory (has `adapter_config.json`): the base model + adapter;
    - a `.gguf` file: converted once into a cached safetensors directory (`uld.models.gguf`);
    - anything else: a plain transformers causal LM (hub id or local directory).
    Returns `(model, tokenizer)`, the model in eval mode.
    """
    from uld.models.gguf import resolve_gguf
    from uld.models.uld.io import is_uld_dir

    name_or_path = resolve_gguf(name_or_path, log=_stderr)

    p = Path(name_or_path)
    if target is not None and not is_uld_dir(p):
        raise UldError(f"a target override applies only to a ULD run directory, and {str(p)!r} is not one")
    if is_uld_dir(p):
        from uld.models.uld import ULDForCausalLM

        model = ULDForCausalLM.from_pretrained(p, dtype=dtype, target=target,
                                               ignore_target_mismatch=ignore_target_mismatch)
        tok_src = p if _has_tokenizer(p) else model.config.target_name_or_path
    elif (p / "offset_config.json").is_file():  # offset unlearning (uld.models.offset)
        from uld.models.offset import OffsetForCausalLM

        model = OffsetForCausalLM.from_pretrained(p, dtype=dtype)
        tok_src = p if _has_tokenizer(p) else model.config.name_or_path
    elif (p / "adapter_config.json").is_file():
        try:
            from peft import AutoPeftModelForCausalLM

            model = AutoPeftModelForCausalLM.from_pretrained(str(p))
        except Exception as e:
            raise UldError(f"could not load the peft adapter in {str(p)!r}: {e}") from e
        tok_src = p if _has_tokenizer(p) else model.peft_config["default"].base_model_name_or_path
    else:
        if p.exists() and not (p / "config.json").is_file():
            raise UldError(f"{str(p)!r} holds no model: expected config.json (transformers or ULD) or uld_config.json (older ULD runs)")
        model = load_causal_lm(name_or_path, dtype=dtype)
        tok_src = name_or_path
    if device:
        model.to(device)
    model.eval()
    return model, load_tokenizer(tok_src)


def _has_tokenizer(p: Path) -> bool:
    return (p / "tokenizer.json").is_file() or (p / "tokenizer_config.json").is_file()


MODEL_MARKERS = ("config.json", "uld_config.json", "offset_config.json", "adapter_config.json")


def resolve_model_path(model: str) -> str:
    """A model directory (a `uld unlearn` run directory is one), or a directory whose `model/` or
    `final/` holds the model."""
    p = Path(model)
    if not p.is_dir() or any((p / m).is_file() for m in MODEL_MARKERS):
        return model
    for sub in ("model", "final"):
        if any((p / sub / m).is_file() for m in MODEL_MARKERS):
            return str(p / sub)
    return model


def _stderr(msg: str) -> None:
    import sys

    print(msg, file=sys.stderr)
