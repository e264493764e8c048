"""Linear layers over a few rows at the cost of one: the CPU verification forward.

Verifying K drafts runs the full model over K+1 positions. On a memory-bound CPU that should cost
about one single-token forward (the weights are read once either way), but torch's CPU `linear` over
2-9 rows takes a GEMM path that costs 2-3x the one-row product (measured for SmolLM2's and
Qwen2.5-1.5B's shapes; see docs/BENCHMARKS.md), which alone kept self-speculation below 1x here.
Computing the same product weight-major, `W @ x.T`, streams W once and costs ~0.7-1.2x of one row.

`NarrowLinear` is a TorchFunctionMode: it changes `F.linear` only inside a `with` block on the
calling thread, for inputs of 2..max_rows rows (K+1 <= 8), and leaves every module untouched. The products are
the same sums in another order, so logits can differ from the one-row path by float rounding, as
they already did with the GEMM path; greedy identity is tested like any other verification.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode


class NarrowLinear(TorchFunctionMode):
    def __init__(self, max_rows: int = 8):  # wider, the weight-major product stops paying (measured)
        super().__init__()
        self.max_rows = max_rows

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            x, weight = args[0], args[1]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            rows = x.numel() // x.shape[-1]
            if 1 < rows <= self.max_rows and x.device.type == "cpu":
                out = torch.mm(weight, x.reshape(rows, x.shape[-1]).t()).t().contiguous()
                if bias is not None:
                    out = out + bias
                return out.view(*x.shape[:-1], weight.shape[0])
        return func(*args, **kwargs)
