"""Registration of the ULD model with transformers' Auto classes.

After `import uld`, `AutoConfig.from_pretrained(run)`, `AutoModelForCausalLM.from_pretrained(run)`,
`pipeline("text-generation", model=run)` and every tool built on them open a ULD run directory.

Registering needs transformers' auto modules, which import torch (seconds), while `import uld` (and
so `uld --help`) stays light. So `install` registers the config at once when `AutoConfig`'s module
is already loaded, and otherwise hooks its import: the registration runs right after transformers
loads it, before any loader can use it. The model class follows with the first `ULDConfig` made.
This module imports nothing heavy at import time.
"""

from __future__ import annotations

import importlib.abc
import sys

CONFIG_MODULE = "transformers.models.auto.configuration_auto"


def register_config() -> None:
    """Register `ULDConfig` with `AutoConfig`. `ULDForCausalLM` is registered with
    `AutoModelForCausalLM` when the first `ULDConfig` is made (every loader reads the config
    first): importing the model class here, inside transformers' own import, could find
    transformers' modelling modules half-loaded."""
    from transformers import AutoConfig

    from uld.models.uld.config import ULDConfig

    AutoConfig.register(ULDConfig.model_type, ULDConfig, exist_ok=True)


def register_auto_classes() -> None:
    """Register `ULDConfig` with `AutoConfig` and `ULDForCausalLM` with `AutoModelForCausalLM` now."""
    from uld.models.uld.config import register_model

    register_config()
    register_model()


_REGISTER = {CONFIG_MODULE: register_config}


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs a module's registration right after the module named in `_REGISTER` is executed."""

    def __init__(self) -> None:
        self.pending = {name for name in _REGISTER if name not in sys.modules}

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.pending:
            return None
        self.pending.discard(fullname)
        if not self.pending:
            sys.meta_path.remove(self)
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader, register = spec.loader, _REGISTER[fullname]
        run = loader.exec_module

        def exec_module(module):
            run(module)
            register()

        loader.exec_module = exec_module
        return spec


def install() -> None:
    """Register now for the auto modules already loaded; hook the import of the others."""
    hook = _AfterImport()
    for name, register in _REGISTER.items():
        if name in sys.modules:
            register()
    if hook.pending and not any(isinstance(f, _AfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, hook)
