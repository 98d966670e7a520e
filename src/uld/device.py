"""Torch device names from the command line, checked before any model is loaded."""

from __future__ import annotations

from uld.errors import UldError


def resolve_device(device: str | None, flag: str = "--device") -> str:
    """`device` checked against this machine, or the default (cuda when available, else cpu).

    `UldError` in one sentence for a name torch does not know (`gpu`), a CUDA device on a
    machine without CUDA, or a CUDA index this machine does not have (`cuda:7` on one GPU)."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError) as e:
        raise UldError(f"{flag} {device!r} is not a torch device; use cpu, cuda or cuda:N") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UldError(f"{flag} {device!r}: CUDA is not available on this machine; use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UldError(f"{flag} {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                           f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    elif dev.type not in ("cpu", "mps", "xpu") or (dev.type == "mps" and not torch.backends.mps.is_available()):
        raise UldError(f"{flag} {device!r} is not available here; use cpu or cuda")
    return device
