"""Load a tokenizer and a causal LM from a hub id or a local directory."""

from __future__ import annotations

from pathlib import Path

from uld.errors import UldError


def load_tokenizer(name_or_path: str | Path):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(name_or_path))
    except Exception as e:
        raise UldError(f"could not load a tokenizer from {str(name_or_path)!r}: {e}") from e
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(name_or_path: str | Path, dtype: str | None = None, device: str | None = None):
    """Load a plain transformers causal LM; one clear error when it cannot be loaded."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs = {}
    if dtype:
        kwargs["dtype"] = getattr(torch, dtype)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(name_or_path), **kwargs)
    except Exception as e:
        raise UldError(f"could not load a causal language model from {str(name_or_path)!r}: {e}") from e
    if device:
        model.to(device)
    model.eval()
    return model
