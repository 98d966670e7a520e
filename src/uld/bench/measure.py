"""What the performance benchmarks measure with: peak memory in a window, tensor bytes, the machine.

Peak memory: on CPU the growth of the process's resident set over a window (the kernel's
peak-RSS counter is reset at the window's start where Linux allows, else `ru_maxrss`), on CUDA
`torch.cuda.max_memory_allocated`; tracemalloc does not see torch's allocator.

Live tensor bytes (`LiveCounter`): the peak of the bytes torch's own allocator holds for tensors
during a window, counted from its allocation and free events (torch.profiler's memory events on
CPU, `torch.cuda.max_memory_allocated` on CUDA). Unlike the resident set it does not depend on
what the C allocator keeps after a free: glibc malloc raises its mmap threshold to the size of each
large block freed (up to 32 MiB, and its trim threshold to twice that), then serves smaller tensors
from its heap and keeps the heap's free space, so the same tensors can cost 10-20 % more (or,
reusing free space left from before the window, less) resident memory from one run to the next.
Fixing the threshold (`MALLOC_ENV`) makes every tensor above 64 KiB its own mapping, returned at
its free, and the resident set follow the live bytes.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}
"""Environment of the fresh processes that measure resident memory: a fixed glibc mmap threshold
(64 KiB, which also switches off its dynamic raising), so every tensor above it is mapped on its own
and unmapped at its free, and the resident set follows the live tensors (other C libraries ignore it)."""


def memory_env() -> dict[str, str]:
    """This process's environment with `MALLOC_ENV`: for a fresh process that measures resident memory."""
    return {**os.environ, **MALLOC_ENV}


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


@dataclass(frozen=True)
class LiveBytes:
    """Tensor memory allocated by torch during a window, in MB: the highest total held at once
    (`peak_mb`) and what is still held at its end (`end_mb`, a returned result included)."""

    peak_mb: float
    end_mb: float


class LiveCounter:
    """Counts the bytes torch's allocator gives to tensors created inside a `with` block, in the
    order of their allocations and frees: on CPU from torch.profiler's memory events, on CUDA from
    `max_memory_allocated` minus the memory allocated at the start. Tensors that existed before the
    block are not counted. The figure depends neither on the C allocator nor on the thread count.

    The CPU profiler keeps a record of every operator until it stops (about 3 KB each: gigabytes
    for one batched generation), so long calls `flush()` now and then, e.g. once per decoding step
    with `generate(..., stopping_criteria=[counter.each_step()])`: each flush folds the events so
    far into the running total and drops them. Allocations are matched to their frees across
    flushes by torch's allocator itself.
    """

    def __init__(self):
        import torch

        self.cuda = torch.cuda.is_available()
        self._held = self._peak = self._base = 0

    def __enter__(self) -> LiveCounter:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        else:
            self._start()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            self._peak = torch.cuda.max_memory_allocated() - self._base
            self._held = torch.cuda.memory_allocated() - self._base
        else:
            self._fold()

    @staticmethod
    def _config():
        import torch
        from torch.autograd import ProfilerActivity, ProfilerConfig, ProfilerState

        # (state, report_input_shapes, profile_memory, with_stack, with_flops, with_modules, experimental)
        config = ProfilerConfig(ProfilerState.KINETO, False, True, False, False, False,
                                torch._C._profiler._ExperimentalConfig())
        return config, {ProfilerActivity.CPU}

    def _start(self) -> None:
        from torch.autograd import _enable_profiler, _prepare_profiler

        config, activities = self._config()
        _prepare_profiler(config, activities)
        _enable_profiler(config, activities)

    def _fold(self) -> None:
        from torch._C._autograd import DeviceType
        from torch.autograd import _disable_profiler

        events = sorted((e.start_ns(), e.nbytes()) for e in _disable_profiler().events()
                        if e.name() == "[memory]" and e.device_type() == DeviceType.CPU)
        for _, nbytes in events:  # frees are negative
            self._held += nbytes
            self._peak = max(self._peak, self._held)

    def flush(self) -> None:
        if not self.cuda:
            self._fold()
            self._start()

    def each_step(self):
        """A transformers stopping criterion that never stops and flushes this counter at every step."""
        import torch
        from transformers import StoppingCriteria

        counter = self

        class _Flush(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                counter.flush()
                return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

        return _Flush()

    @property
    def result(self) -> LiveBytes:
        return LiveBytes(self._peak / 2**20, self._held / 2**20)


def live_window(fn):
    """Call `fn()` inside a `LiveCounter`; (its result, `LiveBytes`). For short calls: a long one
    needs the counter's `flush`."""
    with LiveCounter() as counter:
        out = fn()
    return out, counter.result


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
        "the model; generate: after loading it and one warm-up call, glibc's mmap threshold fixed at 64 KiB); "
        "generate also reports live tensor bytes (torch.profiler memory events)",
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
