"""Where a model runs and in which precision.

One rule for the library, the CLI and the app (each may still name a device or dtype, and
SELFSPEC_DEVICE / SELFSPEC_DTYPE override the default):
- CUDA with compute capability 8.0 or newer: bfloat16. Below 8.0 (a T4 is 7.5) bf16 is only
  emulated, although `torch.cuda.is_bf16_supported()` counts emulation as support, so the
  capability is read instead and float16 is used.
- CPU: float32, the exact one, unless the model's own forwards measure clearly faster in bfloat16 or
  float16 on this machine (AVX512-BF16, AMX); measured once per machine and model, cached like a kernel choice.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass

import torch
from torch import nn

from selfspec.engine.devices import dtype_name
from selfspec.engine.host import available_memory, zero_gpu
from selfspec.engine.kernels import choose_fastest

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
NATIVE_BF16_CAPABILITY = (8, 0)
CPU_16BIT_MARGIN = 0.9  # bf16 on the CPU only when it takes < 90% of the fp32 time (noise, exactness)
VERIFY_POSITIONS = 5  # the forward a dtype is also timed over: a verification of four drafts


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
        return Placement(device, resolve_dtype(dtype), f"{dtype_name(resolve_dtype(dtype))} on {device}, as asked")
    if torch.device(device).type == "cuda":
        if zero_gpu():  # no GPU is attached outside @spaces.GPU calls; every ZeroGPU card is 8.0 or newer
            return Placement(device, torch.bfloat16, "bfloat16 on ZeroGPU (its GPUs compute it natively)")
        capability = tuple(torch.cuda.get_device_capability(torch.device(device)))
        shown = ".".join(map(str, capability))
        if capability >= NATIVE_BF16_CAPABILITY:
            return Placement(device, torch.bfloat16, f"bfloat16: CUDA capability {shown} computes it natively")
        return Placement(device, torch.float16, f"float16: CUDA capability {shown} has no native bfloat16")
    return Placement(device, torch.float32, "float32 on the CPU (exact), unless 16 bits measure faster",
                     measure_cpu_16bit=True)


def _cuda_present() -> bool:
    return zero_gpu() or torch.cuda.is_available()


@torch.inference_mode()
def measured_cpu_dtype(model: nn.Module, key: str) -> tuple[torch.dtype, str]:
    """float32, or a 16-bit dtype, for a model loaded in float32 on the CPU: whichever runs a one-token forward
    (a plain step) and a VERIFY_POSITIONS-position forward (a verification) faster, together.

    Both widths, because a dtype can be quick over one row and slow over several (float16 on a CPU without
    float16 arithmetic: docs/BENCHMARKS.md, "A third CPU"), and self-speculation mostly runs verifications.
    A bfloat16 and a float16 copy are timed against the model, interleaved; a 16-bit dtype wins only below
    CPU_16BIT_MARGIN of the fp32 time. The choice is cached per machine and key (see engine/kernels.py),
    so the copies are made once. A model too large for two half-size copies in
    memory stays in float32 unmeasured.
    """
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    if weights > available_memory() // 4:
        return torch.float32, "float32 on the CPU (too large to time 16-bit copies)"
    widths = [torch.ones(1, 1, dtype=torch.long), torch.ones(1, VERIFY_POSITIONS, dtype=torch.long)]
    copies: dict[torch.dtype, nn.Module] = {}

    def forward(dtype: torch.dtype):
        def run():
            if dtype is not torch.float32 and dtype not in copies:  # made only when the choice is not cached
                copies[dtype] = copy.deepcopy(model).to(dtype)
            timed = model if dtype is torch.float32 else copies[dtype]
            return [timed(input_ids=ids) for ids in widths]
        return run

    candidates = {dtype_name(dtype): forward(dtype) for dtype in (torch.float32, torch.bfloat16, torch.float16)}
    ms = choose_fastest(f"cpu-dtype-steps:{key}", candidates, torch.device("cpu"), repeats=3, rounds=2).milliseconds
    copies.clear()
    fp32 = ms.get("float32")
    best = min((name for name in ("bfloat16", "float16") if name in ms), key=ms.get, default=None)
    if fp32 is None or best is None:
        return torch.float32, "float32 on the CPU"
    took = f"a token and a {VERIFY_POSITIONS}-token verification take"
    if ms[best] < CPU_16BIT_MARGIN * fp32:
        return DTYPES[best], f"{best} on the CPU: {took} {ms[best]:.1f} ms vs {fp32:.1f} ms in float32"
    return torch.float32, f"float32 on the CPU: {took} {fp32:.1f} ms vs {ms[best]:.1f} ms in {best}"
