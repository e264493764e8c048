"""Where a model lives, in which dtype, and waiting for its queued work before a clock is read."""

from __future__ import annotations

import torch
from torch import nn


def model_device(model: nn.Module) -> torch.device:
    return model.get_input_embeddings().weight.device


def dtype_name(dtype: torch.dtype | str) -> str:
    """'float32' for torch.float32: how reports and cache keys name a dtype."""
    return str(dtype).removeprefix("torch.")


def model_dtype_name(model: nn.Module) -> str:
    """The dtype the model's weights are in (what it runs in, whatever was asked for)."""
    return dtype_name(model.get_input_embeddings().weight.dtype)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; the CPU needs no wait)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class HostCopy:
    """A device tensor's values copied to the host without waiting for the device: `read()` waits for that
    copy alone, so work queued after it keeps the device busy meanwhile (on the CPU: the values at once)."""

    def __init__(self, tensor: torch.Tensor):
        if tensor.device.type == "cuda":
            self._values = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            self._values.copy_(tensor, non_blocking=True)
            self._copied = torch.cuda.Event()
            self._copied.record()
        else:
            self._values, self._copied = tensor, None

    def read(self) -> int | float | list:
        if self._copied is not None:
            self._copied.synchronize()
        return self._values.tolist()
