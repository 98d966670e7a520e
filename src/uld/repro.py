"""Run-to-run and machine-to-machine reproducibility on CPU: pinned kernels, and a record of the machine.

Measured with torch 2.13 (CPU wheel) on an AVX-512 Xeon, ten AdamW steps of a small Llama:
the weights differ in their last bits when MKL may use AVX-512 or only AVX2
(`MKL_ENABLE_INSTRUCTIONS=AVX2`, which is what an AVX2-only CPU does), and again when ATen's own
vectorised kernels (softmax, norms, reductions) run at AVX-512 or AVX2 (`ATEN_CPU_CAPABILITY`).
Over a training run such differences grow into different models. Two settings remove both:

- `MKL_CBWR=AVX2`: MKL's conditional numerical reproducibility; every CPU with AVX2 or better
  takes the same code path (the AVX2 one). Read once when MKL loads, i.e. before `import torch`.
- `ATEN_CPU_CAPABILITY=avx2`: ATen dispatches its kernels at AVX2 on every such CPU.

With both, this AVX-512 machine gave the same bits as the same run emulating an AVX2-only CPU.
Still needed for identical bits: the same torch build, the same number of threads (reductions
are split per thread), and the same data and seeds. GPUs are outside this module.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

PINNED_ENV = {"MKL_CBWR": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
"""Environment that makes CPU kernels the same on every x86 CPU with AVX2 or better."""

RECORDED_ENV_PREFIXES = ("MKL_", "ATEN_", "OMP_", "ONEDNN_", "DNNL_", "KMP_", "CUBLAS_", "CUDA_VISIBLE")


def pin_cpu_kernels() -> bool:
    """Set `PINNED_ENV` (values the user already set win) for the kernels loaded from now on.

    Returns False when torch is already imported: MKL has then read its settings and the pin
    cannot act in this process (call it first thing, before anything imports torch)."""
    for key, value in PINNED_ENV.items():
        os.environ.setdefault(key, value)
    return "torch" not in sys.modules


def deterministic(threads: int | None = None) -> None:
    """Ask torch for deterministic kernels (a warning where none exists) and fix the thread count."""
    import torch

    torch.use_deterministic_algorithms(True, warn_only=True)
    if threads:
        torch.set_num_threads(threads)


def _cpu() -> tuple[str | None, list[str]]:
    """CPU model name and the vector-ISA flags that change kernel choice (Linux; else empty)."""
    try:
        text = open("/proc/cpuinfo", encoding="utf-8").read()  # noqa: SIM115
    except OSError:
        return platform.processor() or None, []
    model, flags = None, []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model is None:
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = sorted(f for f in value.split() if f.startswith(("avx", "amx", "fma", "sse4")))
    return model, flags


def machine_info() -> dict[str, Any]:
    """What decides the bits of a CPU run: CPU, ISA, threads, torch build, kernel environment."""
    import torch

    model, flags = _cpu()
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": model,
        "cpu_count": os.cpu_count(),
        "isa": flags,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(RECORDED_ENV_PREFIXES)},
        "kernels_pinned": all(os.environ.get(k) == v for k, v in PINNED_ENV.items()),
    }
