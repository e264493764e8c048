"""Where two greedy outputs part, and how close the full model's own choice was there.

In bfloat16 or float16, a verification over K+1 positions and a one-token decode compute the same
logits with different rounding. Where the full model's two best logits are nearly tied the argmax
can flip, and from there the outputs part for good: both are the full model's greedy choice up to
rounding. float32 keeps them token-identical (tests/test_divergence.py). A gap far wider than
rounding explains is not a near-tie, and is reported as such.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import torch
from torch import nn

from selfspec.engine.devices import dtype_name

ROUNDING_STEPS = 4  # a near-tie: top-2 gap within 4 machine epsilons of the top logit's size


@dataclass(frozen=True)
class Divergence:
    position: int  # index of the first differing generated token
    tokens: tuple[int | None, int | None]  # (reference's, other's) token there; None where one ended
    top2: tuple[int, int]  # the full model's two best tokens there
    margin: float  # their logit gap, computed by one forward over the context
    dtype: str
    near_tie: bool  # within what the dtype's rounding can flip

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        where = (f"outputs differ from generated token {self.position + 1} on: the full model's top two logits "
                 f"there are {self.margin:.3g} apart in {self.dtype}")
        if self.near_tie:
            return where + (", a near-tie that batched (verification) and one-at-a-time arithmetic round "
                            "differently; both texts are the full model's greedy output up to that rounding")
        return where + ", wider than rounding explains: please report it (prompt, model, settings)"


def first_difference(a: Sequence[int], b: Sequence[int]) -> int | None:
    """Index of the first position where two token sequences differ (one ending counts); None if equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


@torch.inference_mode()
def explain_difference(model: nn.Module, prompt_ids: Sequence[int], reference: Sequence[int],
                       other: Sequence[int]) -> Divergence | None:
    """The first difference between two outputs for one prompt and the full model's top-2 gap there."""
    position = first_difference(reference, other)
    if position is None:
        return None
    device = model.get_input_embeddings().weight.device
    context = torch.tensor([list(prompt_ids) + list(reference[:position])], device=device)
    logits = model(input_ids=context, logits_to_keep=1).logits[0, -1].float()
    best = logits.topk(2)
    margin = float(best.values[0] - best.values[1])
    dtype = next(model.parameters()).dtype
    tolerance = ROUNDING_STEPS * torch.finfo(dtype).eps * float(best.values[0].abs())
    tokens = tuple(seq[position] if position < len(seq) else None for seq in (reference, other))
    return Divergence(position, tokens, tuple(best.indices.tolist()), margin, dtype_name(dtype),
                      margin <= tolerance)
