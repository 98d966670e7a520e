"""Settings checks shared by `uld eval` and `uld generate`: one sentence for a bad value,
before any model work."""

from __future__ import annotations

import math
import re

from uld.errors import UldError


def check_generation(max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0) -> None:
    """Validate generation settings the way `uld eval` and `uld generate` need: one sentence."""
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise UldError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise UldError(f"--temperature must be a finite number above 0, got {temperature}")
    if not (isinstance(top_p, (int, float)) and math.isfinite(top_p) and 0 < top_p <= 1):
        raise UldError(f"--top-p must be in (0, 1], got {top_p}")


def check_device(device: str | None) -> None:
    """One sentence for a device this machine does not have (before loading anything)."""
    if device is None:
        return
    import torch

    m = re.fullmatch(r"(cpu|cuda|mps)(?::(\d+))?", device)
    if m is None:
        raise UldError(f"--device {device!r} is not a device: use cpu, cuda, cuda:N or mps")
    kind, index = m.group(1), m.group(2)
    if kind == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise UldError(f"--device {device!r}: this machine has no CUDA device; use --device cpu")
        if index is not None and int(index) >= n:
            raise UldError(f"--device {device!r}: this machine has {n} CUDA device(s), cuda:0 to cuda:{n - 1}")
    elif kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UldError(f"--device {device!r}: MPS is not available here; use --device cpu")
