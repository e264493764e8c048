"""What results record about where they were measured: the device and the library versions."""

from __future__ import annotations

import platform

import torch
from torch import nn

from selfspec.engine.devices import model_device
from selfspec.engine.kernels import cpu_model


def device_name(model: nn.Module) -> str:
    device = model_device(model)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} ({torch.get_num_threads()} threads)"


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "optuna"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out
