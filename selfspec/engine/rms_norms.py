"""RMSNorm in four tensor operations, and whether this machine runs a model's norms that way.

transformers' RMSNorm runs eight operations (two casts, a square, a mean, an addition, a reciprocal square
root and two products), and at batch 1 on a CPU each costs microseconds whatever its size; a decoding
step runs two norms a layer. The same value in four:
    x * w / sqrt(mean(x^2) + eps) = x / hypot(||x||, sqrt(d eps)) * w sqrt(d)
since sqrt(||x||^2 + d eps) is sqrt(d) times the root mean square with its epsilon (a zero vector stays
zero). It differs from transformers' by float32 ulps, so the full model runs it ("by length") only where
the engine chooses its kernels and this machine's timing says it pays; the low-bit draft always does.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from selfspec.engine.devices import dtype_name
from selfspec.engine.kernels import choose_fastest

NORM_FORMS = ("transformers", "by length")


def norm_constants(norm: nn.Module, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight * sqrt(d), sqrt(d * eps)): `rms_normed`'s constants for an RMSNorm, the first in `dtype`
    (default: the weight's)."""
    width = norm.weight.shape[-1]
    epsilon_norm = torch.tensor((width * norm.variance_epsilon) ** 0.5, dtype=torch.float32, device=norm.weight.device)
    return norm.weight.detach().to(dtype or norm.weight.dtype) * width ** 0.5, epsilon_norm


def rms_normed(hidden: torch.Tensor, scaled_weight: torch.Tensor, epsilon_norm: torch.Tensor) -> torch.Tensor:
    """RMSNorm of `hidden` with `norm_constants`, in four operations, in `hidden`'s dtype as far as the
    constants' dtype allows."""
    length = torch.hypot(torch.linalg.vector_norm(hidden, dim=-1, keepdim=True), epsilon_norm)
    return hidden / length * scaled_weight


def by_length(norm: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """`norm` (a transformers RMSNorm: weight * x / sqrt(mean(x^2) + eps), in float32) as `rms_normed`.
    Other dtypes are normed in float32 and rounded once, where transformers rounds the normed value and
    then its product with the weight: six operations, no less accurate."""
    scaled_weight, epsilon_norm = norm_constants(norm, torch.float32)
    if norm.weight.dtype == torch.float32:
        return lambda hidden: rms_normed(hidden, scaled_weight, epsilon_norm)
    return lambda hidden: rms_normed(hidden.float(), scaled_weight, epsilon_norm).to(hidden.dtype)


def is_rms_norm(norm: nn.Module) -> bool:
    """Whether `norm` computes transformers' Llama-family RMSNorm (what `by_length` replaces)."""
    return (type(norm).__name__.endswith("RMSNorm") and hasattr(norm, "variance_epsilon")
            and isinstance(getattr(norm, "weight", None), torch.Tensor) and norm.weight.dim() == 1)


def norm_form(norm: nn.Module) -> str:
    """The faster of NORM_FORMS for one position through `norm` on this machine (timed once, cached);
    transformers' own off the CPU, where steps are compiled or captured and small operations cost little."""
    weight = norm.weight
    if weight.device.type != "cpu" or not is_rms_norm(norm):
        return "transformers"
    hidden = torch.randn(1, 1, weight.shape[-1], dtype=weight.dtype)
    fewer = by_length(norm)
    # Twenty calls a sample: one lasts a few microseconds, near the timer's own cost.
    candidates = {"transformers": lambda: [norm(hidden) for _ in range(20)],
                  "by length": lambda: [fewer(hidden) for _ in range(20)]}
    key = f"rms-norm:{dtype_name(weight.dtype)}:{weight.shape[-1]}"
    with torch.inference_mode():
        return choose_fastest(key, candidates, weight.device, repeats=9, rounds=2, incumbent="transformers",
                              margin=0.1).name
