"""uld: LLM unlearning built around ULD — Unlearning from Logit Difference (Ji et al., 2024)."""

__version__ = "0.1.0"

_LAZY = {
    "build_assistant": "uld.models.assistant",
    "ULDForCausalLM": "uld.models.uld",
    "ULDConfig": "uld.models.uld",
}


def __getattr__(name: str):
    # Lazy so that `import uld` (and `uld --help`) does not import torch.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'uld' has no attribute {name!r}")


def _register_with_transformers() -> None:
    # AutoConfig / AutoModelForCausalLM open ULD run directories once `uld` is imported; the
    # registration waits for transformers' auto modules, so this stays free of torch.
    import importlib

    importlib.import_module("uld.models.auto").install()


_register_with_transformers()

__all__ = ["ULDConfig", "ULDForCausalLM", "build_assistant", "__version__"]
