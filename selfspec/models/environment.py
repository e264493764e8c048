"""What results record about where they were measured: the device and the library versions."""

from __future__ import annotations

import platform
from pathlib import Path

import torch
from torch import nn

from selfspec.engine.devices import model_device


def device_name(model: nn.Module) -> str:
    device = model_device(model)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu} ({torch.get_num_threads()} threads)"


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "optuna"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out
