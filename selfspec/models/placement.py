"""Where a model runs, in which precision, and whether this host lets it be compiled.

One rule for the library, the CLI and the app (each may still name a device or dtype, and
SELFSPEC_DEVICE / SELFSPEC_DTYPE override the default):
- CUDA with compute capability 8.0 or newer: bfloat16. Below 8.0 (a T4 is 7.5) bf16 is only
  emulated, although `torch.cuda.is_bf16_supported()` counts emulation as support, so the
  capability is read instead and float16 is used.
- CPU: float32, the exact one, unless the model's own forward measures clearly faster in bfloat16
  on this machine (AVX512-BF16/AMX); measured once per machine and model, cached like a kernel choice.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass

import torch
from torch import nn

from selfspec.engine.host import zero_gpu
from selfspec.engine.kernels import choose_fastest

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
NATIVE_BF16_CAPABILITY = (8, 0)
CPU_16BIT_MARGIN = 0.9  # bf16 on the CPU only when it takes < 90% of the fp32 time (noise, exactness)


@dataclass(frozen=True)
class Placement:
    device: str
    dtype: torch.dtype | str  # a torch dtype, or "auto" (the checkpoint's own)
    reason: str  # one line for logs and the app
    measure_cpu_16bit: bool = False  # the CPU default: settle fp32 vs bf16 by timing once loaded


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype | str:
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)} or auto") from None


def choose_placement(device: str | torch.device | None = None, dtype: str | torch.dtype | None = None) -> Placement:
    """The device and dtype to load a model with: as asked, else from SELFSPEC_DEVICE/DTYPE, else by capability."""
    device = str(device or os.environ.get("SELFSPEC_DEVICE") or ("cuda" if _cuda_present() else "cpu"))
    dtype = dtype or os.environ.get("SELFSPEC_DTYPE") or None
    if dtype is not None:
        return Placement(device, resolve_dtype(dtype), f"{_name(resolve_dtype(dtype))} on {device}, as asked")
    if torch.device(device).type == "cuda":
        if zero_gpu():  # no GPU is attached outside @spaces.GPU calls; every ZeroGPU card is 8.0 or newer
            return Placement(device, torch.bfloat16, "bfloat16 on ZeroGPU (its GPUs compute it natively)")
        capability = tuple(torch.cuda.get_device_capability(torch.device(device)))
        shown = ".".join(map(str, capability))
        if capability >= NATIVE_BF16_CAPABILITY:
            return Placement(device, torch.bfloat16, f"bfloat16: CUDA capability {shown} computes it natively")
        return Placement(device, torch.float16, f"float16: CUDA capability {shown} has no native bfloat16")
    return Placement(device, torch.float32, "float32 on the CPU (exact), unless bfloat16 measures faster",
                     measure_cpu_16bit=True)


def _cuda_present() -> bool:
    return zero_gpu() or torch.cuda.is_available()


def _name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


@torch.inference_mode()
def measured_cpu_dtype(model: nn.Module, key: str) -> tuple[torch.dtype, str]:
    """float32 or bfloat16 for a model loaded in float32 on the CPU: whichever one-token forward is faster.

    A bf16 copy is timed against the model, interleaved; bf16 wins only below CPU_16BIT_MARGIN of the
    fp32 time. The choice is cached per machine and key (see engine/kernels.py), so the copy is made
    once. A model too large for a second copy in memory stays in float32 unmeasured.
    """
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    if weights // 2 > available_memory() // 4:
        return torch.float32, "float32 on the CPU (too large to time a bfloat16 copy)"
    ids = torch.ones(1, 1, dtype=torch.long)
    copies: list[nn.Module] = []

    def bf16_forward():
        if not copies:  # made only when the choice is not cached
            copies.append(copy.deepcopy(model).to(torch.bfloat16))
        copies[0](input_ids=ids)

    choice = choose_fastest(f"cpu-dtype:{key}", {"float32": lambda: model(input_ids=ids), "bfloat16": bf16_forward},
                            torch.device("cpu"), repeats=3, rounds=2)
    copies.clear()
    ms = choice.milliseconds
    if "bfloat16" in ms and "float32" in ms and ms["bfloat16"] < CPU_16BIT_MARGIN * ms["float32"]:
        return torch.bfloat16, f"bfloat16 on the CPU: a token takes {ms['bfloat16']:.1f} ms vs {ms['float32']:.1f} ms in float32"
    if "float32" in ms and "bfloat16" in ms:
        return torch.float32, f"float32 on the CPU: a token takes {ms['float32']:.1f} ms vs {ms['bfloat16']:.1f} ms in bfloat16"
    return torch.float32, "float32 on the CPU"


def available_memory() -> int:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")

