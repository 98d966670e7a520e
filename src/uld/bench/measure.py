"""What the performance benchmarks measure with: peak memory in a window, tensor bytes, the machine.

Peak memory: on CPU the growth of the process's resident set over a window (the kernel's
peak-RSS counter is reset at the window's start where Linux allows, else `ru_maxrss`), on CUDA
`torch.cuda.max_memory_allocated`; tracemalloc does not see torch's allocator.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any


def rss_mb() -> float:
    """Peak resident set of this process so far, in MB."""
    import resource

    # ru_maxrss is in KiB on Linux, bytes on macOS
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def proc_status_mb(key: str) -> float | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return None


def reset_peak_rss() -> float | None:
    """Reset the kernel's peak-RSS counter (Linux: clear_refs 5) and return the current RSS in MB;
    None where that is impossible (then the lifetime peak `ru_maxrss` is all there is)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return proc_status_mb("VmRSS")


def device_name() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def peak_start() -> tuple[str, float]:
    """Start a peak-memory window; `peak_delta` gives how far memory rose above the start in it."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return "cuda", float(torch.cuda.memory_allocated()) / 2**20
    now = reset_peak_rss()
    return ("hwm", now) if now is not None else ("maxrss", rss_mb())


def peak_delta(start: tuple[str, float]) -> float:
    import torch

    kind, base = start
    if kind == "cuda":
        return float(torch.cuda.max_memory_allocated()) / 2**20 - base
    if kind == "hwm":
        return (proc_status_mb("VmHWM") or base) - base
    return rss_mb() - base


def weights_mb(model) -> float:
    """Bytes of the distinct tensor storages a model holds (shared weights counted once), in MB."""
    import itertools

    storages = {}
    for t in itertools.chain(model.parameters(), model.buffers()):
        s = t.untyped_storage()
        storages[(s.device, s.data_ptr())] = s.nbytes()
    return sum(storages.values()) / 2**20


def assistant_kv_mb(model, batch: int, length: int) -> float:
    """Size of the assistant's KV cache after `length` positions: 2 x K layers x B x T x kv heads x head dim."""
    cfg = model.assistant.config
    heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    itemsize = next(model.assistant.parameters()).element_size()
    return 2 * cfg.num_hidden_layers * batch * length * heads * head_dim * itemsize / 2**20


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def machine() -> dict[str, Any]:
    import torch

    dev = device_name()
    return {
        "platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "device": dev,
        "gpu": torch.cuda.get_device_name(0) if dev == "cuda" else None,
        "memory_method": "torch.cuda.max_memory_allocated delta" if dev == "cuda"
        else "peak RSS of a fresh process per case (the kernel's peak counter reset at the start of the "
        "window, or ru_maxrss where it cannot be) minus its RSS at the start (train: before loading "
        "the model; generate: after loading it and one warm-up call)",
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
