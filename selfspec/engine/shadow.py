"""Shadow module trees: a copy of a model's modules that shares every tensor with it.

A shadow is how the engine runs the same weights another way (low-bit draft copies, other products
for a few rows) without touching the model: swap modules in the shadow, and the model, its
parameters and every other user of it stay exactly as they were.
"""

from __future__ import annotations

import copy
import itertools

from torch import nn


def shadow_copy(model: nn.Module) -> nn.Module:
    """A copy of the module tree that shares every parameter and buffer with `model`."""
    shared = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    return copy.deepcopy(model, memo=shared)


def linear_slots(model: nn.Module) -> list[tuple[nn.Module, str, nn.Linear]]:
    """(parent, attribute, layer) for every nn.Linear, so it can be swapped in the parent."""
    found = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Linear):
                found.append((parent, name, child))
    return found
