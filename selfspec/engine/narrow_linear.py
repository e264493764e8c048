"""Linear layers over a few rows computed weight-major: one of the verification forward's candidates.

Verifying K drafts runs the full model over K+1 positions. On a memory-bound CPU that should cost
about one single-token forward (the weights are read once either way), but on some machines torch's
CPU `linear` over 2-9 rows takes a GEMM path that costs 2-3x the one-row product, and there the same
product computed weight-major, `W @ x.T`, streams W once. On other machines it is the weight-major
product that is slower (docs/BENCHMARKS.md), so it is never used blindly: verify_products.py times
both per weight shape and row count, and this mode redirects only the shapes where it won.

`NarrowLinear` is a TorchFunctionMode: it changes `F.linear` only inside a `with` block on the
calling thread, for inputs of 2..max_rows rows and the chosen weight shapes, and leaves every module
untouched. The products are the same sums in another order, so logits can differ from the one-row
path by float rounding, as they already did with the GEMM path.
"""

from __future__ import annotations

from typing import Container

import torch
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode


def weight_major_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear(x, weight, bias)` computed as (W @ x.T).T: reads W once, row by row."""
    rows = x.numel() // x.shape[-1]
    out = torch.mm(weight, x.reshape(rows, x.shape[-1]).t()).t().contiguous()
    if bias is not None:
        out = out + bias
    return out.view(*x.shape[:-1], weight.shape[0])


class NarrowLinear(TorchFunctionMode):
    def __init__(self, max_rows: int = 8, weight_shapes: Container[tuple[int, int]] | None = None):
        super().__init__()
        self.max_rows = max_rows
        self.weight_shapes = weight_shapes  # (out, in) shapes to redirect; None: every shape

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            x, weight = args[0], args[1]
            rows = x.numel() // x.shape[-1]
            if 1 < rows <= self.max_rows and (self.weight_shapes is None or tuple(weight.shape) in self.weight_shapes):
                return weight_major_linear(x, weight, args[2] if len(args) > 2 else kwargs.get("bias"))
        return func(*args, **kwargs)
