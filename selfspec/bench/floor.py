"""The floor under one autoregressive step: what its matrix products alone cost on this device.

A decoding step of a small-batch LLM is dominated by reading the weights. On a CPU the floor is
measured directly: the model's own linear products, each over one row, run back to back (no
attention, no norms), each with the product the engine chose for one row on this machine
(row_products.py), so that the floor is never slower than what the step itself runs. On a GPU, where one product is too short to time
alone, it is the weight bytes over the memory bandwidth measured by a large device-to-device copy.
Bench reports the autoregressive ms/token against this floor, sampled between the same run's decodes.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from selfspec.engine.kernels import median_milliseconds
from selfspec.engine.narrow_linear import JoinedLinear, RowChosenLinear


@dataclass(frozen=True)
class Floor:
    seconds: float  # one token's matrix products
    how: str  # "linear products" (CPU) or "weight bytes / bandwidth" (GPU)
    weight_bytes: int
    bandwidth_gb_s: float | None = None  # GPU only
    samples: int = 1  # floors measured at different moments, of which `seconds` is the median

    def to_dict(self) -> dict:
        return asdict(self)


def linear_layers(model: nn.Module) -> list[nn.Module]:
    """Every linear layer a decoding step runs, in order (the lm_head included, tied or not): the
    model's own, or their stand-ins in the engine's tuned shadow of it (a joined group is one product)."""
    return [m for m in model.modules() if isinstance(m, (nn.Linear, RowChosenLinear, JoinedLinear))]


def weight_bytes(model: nn.Module) -> int:
    return sum(m.weight.numel() * m.weight.element_size() for m in linear_layers(model))


@torch.inference_mode()
def linear_products_seconds(model: nn.Module, reps: int = 5) -> float:
    """Median time of one row through every linear layer of the model, back to back."""
    layers = linear_layers(model)
    weight = layers[0].weight
    inputs = {m.in_features: torch.randn(1, 1, m.in_features, dtype=weight.dtype, device=weight.device)
              for m in layers}
    device = weight.device

    def run():
        for m in layers:
            m(inputs[m.in_features])

    return median_milliseconds(run, device, reps, warmup=1) / 1e3


@torch.inference_mode()
def copy_bandwidth(device: torch.device, megabytes: int = 1024, reps: int = 5) -> float:
    """Bytes per second moved by a device-to-device copy (each byte read once and written once)."""
    source = torch.empty(megabytes << 20, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    seconds = median_milliseconds(lambda: target.copy_(source), device, reps, warmup=1) / 1e3
    return 2 * source.numel() / seconds


def median_floor(floors: list[Floor]) -> Floor:
    """One floor from several measured at different moments (bench samples it between its runs)."""
    if not floors:
        raise ValueError("no floor measured")
    return replace(floors[0], seconds=statistics.median(f.seconds for f in floors),
                   bandwidth_gb_s=None if floors[0].bandwidth_gb_s is None else
                   statistics.median(f.bandwidth_gb_s for f in floors), samples=len(floors))


def measure_floor(model: nn.Module, reps: int = 5) -> Floor:
    device = model.get_input_embeddings().weight.device
    nbytes = weight_bytes(model)
    if device.type == "cuda":
        bandwidth = copy_bandwidth(device, reps=reps)
        return Floor(nbytes / bandwidth, "weight bytes / bandwidth", nbytes, round(bandwidth / 1e9, 1))
    return Floor(linear_products_seconds(model, reps), "linear products", nbytes)
