"""Which product each of the model's linear layers uses in a verification forward, chosen by timing.

A verification runs the full model over K+1 (2..9) positions. How fast torch's `linear` is over so few
rows depends on the machine: on an AMD EPYC without AVX-512 the weight-major product (narrow_linear.py)
is 3x faster for the lm_head, on an Intel Xeon with AMX it is 1.4x slower. So at load the engine
times both, per weight shape and per row bucket, at the model's own weights and dtype, and the
verification forward uses the faster one (kernels.py caches the choice per machine on disk).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from selfspec.engine.devices import model_dtype_name
from selfspec.engine.kernels import KernelChoice, choose_fastest
from selfspec.engine.narrow_linear import NarrowLinear, weight_major_linear

# Verification widths K+1, grouped so the choices stay few; each is timed at its widest row count.
ROW_BUCKETS = ((2, 3), (4, 5), (6, 9))
PRODUCTS = {"linear": F.linear, "weight-major": weight_major_linear}  # the candidates, same arguments
WIN_MARGIN = 0.1  # weight-major must be >10% faster to replace torch's own product
LARGE_WEIGHT_BYTES = 16 << 20  # weights this large (an lm_head) are timed with fewer repetitions: ~2 s in all


@dataclass(frozen=True)
class VerifyProducts:
    """The weight shapes that use the weight-major product, per row bucket; every other product is `linear`."""

    weight_major: dict[tuple[int, int], frozenset[tuple[int, int]]]  # row bucket -> (out, in) shapes
    choices: tuple[KernelChoice, ...] = ()

    @staticmethod
    def plain() -> "VerifyProducts":
        return VerifyProducts({})

    def mode(self, rows: int):
        """A context in which the verification forward over `rows` positions uses the chosen products."""
        for low, high in ROW_BUCKETS:
            if low <= rows <= high and self.weight_major.get((low, high)):
                return NarrowLinear(max_rows=high, weight_shapes=self.weight_major[(low, high)])
        return contextlib.nullcontext()

    def to_dict(self) -> dict:
        return {"weight_major": {f"rows {lo}-{hi}": sorted(f"{o}x{i}" for o, i in shapes)
                                 for (lo, hi), shapes in self.weight_major.items() if shapes},
                "choices": [c.to_dict() for c in self.choices]}

    def summary(self) -> str:
        """One line for `bench` output, e.g. 'rows 2-3: weight-major for 49152x576; rows 4-5: linear'."""
        return VerifyProducts.summary_of(self.to_dict())

    @staticmethod
    def summary_of(described: dict) -> str:
        """`summary()` from `to_dict()`'s output (as reports carry it)."""
        chosen = described["weight_major"]
        return "; ".join(f"rows {lo}-{hi}: " + (f"weight-major for {', '.join(chosen[f'rows {lo}-{hi}'])}"
                                                 if f"rows {lo}-{hi}" in chosen else "linear")
                         for lo, hi in ROW_BUCKETS)


def linear_weights(model: nn.Module) -> dict[tuple[int, int], torch.Tensor]:
    """One weight per distinct (out, in) shape of the model's linear layers (lm_head included)."""
    weights = {}
    for module in model.modules():
        if isinstance(module, nn.Linear):
            weights.setdefault(tuple(module.weight.shape), module.weight)
    return weights


def _candidates(weight: torch.Tensor, rows: int) -> dict:
    x = torch.randn(1, rows, weight.shape[1], dtype=weight.dtype, device=weight.device)
    return {name: (lambda product=product: product(x, weight)) for name, product in PRODUCTS.items()}


@torch.inference_mode()
def choose_verify_products(model: nn.Module) -> VerifyProducts:
    """Time `linear` against weight-major for each weight shape and row bucket; keep the faster."""
    device = model.get_input_embeddings().weight.device
    dtype = model_dtype_name(model)
    chosen: dict[tuple[int, int], set] = {bucket: set() for bucket in ROW_BUCKETS}
    choices = []
    for shape, weight in linear_weights(model).items():
        for low, high in ROW_BUCKETS:
            large = weight.numel() * weight.element_size() > LARGE_WEIGHT_BYTES
            choice = choose_fastest(f"verify-linear:{dtype}:{shape[0]}x{shape[1]}:rows{low}-{high}",
                                    _candidates(weight, high), device, repeats=3 if large else 5,
                                    rounds=1 if large else 2, incumbent="linear", margin=WIN_MARGIN)
            choices.append(choice)
            if choice.name == "weight-major":
                chosen[(low, high)].add(shape)
    return VerifyProducts({b: frozenset(s) for b, s in chosen.items()}, tuple(choices))
