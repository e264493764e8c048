"""What the host allows: whether this is a Hugging Face ZeroGPU Space, whether torch.compile can run, and
how much memory is free.

One place for these, read by model placement, the Hub guard, the compiled steps, the products and the app.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import torch


def cache_root() -> Path:
    """Where selfspec keeps what it makes once per machine: models, kernel choices, compiled code."""
    return Path(os.environ.get("SELFSPEC_CACHE", Path.home() / ".cache" / "selfspec"))


def zero_gpu() -> bool:
    """A ZeroGPU Space: a GPU is lent per call of a @spaces.GPU function (the platform sets this variable)."""
    return os.environ.get("SPACES_ZERO_GPU", "").strip().lower() not in ("", "0", "false")


def compile_allowed(device: str | torch.device = "cpu") -> str | None:
    """None when torch.compile can run here; otherwise why not, in a few words (shown as a one-line
    notice before running eager: a refused compile must never stop a start)."""
    if zero_gpu():
        return "ZeroGPU allows no torch.compile (ahead-of-time compiled graphs only)"
    try:
        import torch._dynamo

        if not torch._dynamo.is_dynamo_supported():
            return f"torch.compile does not support Python {sys.version.split()[0]}"
    except Exception as exc:  # an odd build: say so, run eager
        return f"torch.compile unavailable ({type(exc).__name__})"
    # Inductor builds C++ kernels on the CPU; on CUDA, Triton builds its launcher with a C compiler.
    if torch.device(device).type == "cpu":
        variable, commands = "CXX", ("c++", "g++", "clang++")
    else:
        variable, commands = "CC", ("cc", "gcc", "clang")
    if not os.environ.get(variable) and not any(shutil.which(command) for command in commands):
        return f"torch.compile needs a compiler ({' or '.join(commands)}), none found"
    if torch.device(device).type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            return "triton is not installed"
    return None


def available_memory() -> int:
    """Bytes of memory the host can still give (Linux's MemAvailable; elsewhere all of it)."""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def free_device_memory(device: torch.device) -> int:
    """Bytes an accelerator can still give (CUDA's own count); the host's elsewhere."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return available_memory()
