"""Linear layers over a few rows computed weight-major: one of the verification forward's candidates.

Verifying K drafts runs the full model over K+1 positions. On a memory-bound CPU that should cost
about one single-token forward (the weights are read once either way), but on some machines torch's
CPU `linear` over 2-9 rows takes a GEMM path that costs 2-3x the one-row product, and there the same
product computed weight-major, `W @ x.T`, streams W once. On other machines it is the weight-major
product that is slower (docs/BENCHMARKS.md), so it is never used blindly: verify_products.py times
both per weight shape and row count, and puts a `WeightMajorLinear` only where it won, in a shadow
of the model (shadow.py) that the verification forward runs. The model itself is never changed.

The products are the same sums in another order, so logits can differ from the one-row path by
float rounding, as they already did with the GEMM path.
"""

from __future__ import annotations

from typing import Collection

import torch
from torch import nn
from torch.nn import functional as F


def weight_major_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear(x, weight, bias)` computed as (W @ x.T).T: reads W once, row by row."""
    rows = x.numel() // x.shape[-1]
    out = torch.mm(weight, x.reshape(rows, x.shape[-1]).t()).t().contiguous()
    if bias is not None:
        out = out + bias
    return out.view(*x.shape[:-1], weight.shape[0])


class WeightMajorLinear(nn.Module):
    """An nn.Linear's stand-in: weight-major over the chosen row counts, torch's `linear` otherwise.

    It holds the layer's own weight and bias tensors (no copy). A module rather than a function mode,
    so that only the swapped layers pay for the choice, not every operation of the forward.
    """

    def __init__(self, linear: nn.Linear, rows: Collection[int]):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.rows = frozenset(rows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() // self.in_features in self.rows:
            return weight_major_linear(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, weight-major rows={sorted(self.rows)}"
