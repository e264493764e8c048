"""Sublayer ids, the searches' view of a profile: ids 0..L-1 are attention sublayers, L..2L-1 MLP sublayers."""

from __future__ import annotations

import random
from typing import Sequence

from selfspec.profiles.schema import SkipProfile


def sublayers_profile(num_layers: int, sublayers: Sequence[int], model: str = "") -> SkipProfile:
    """The profile that skips these sublayer ids."""
    return SkipProfile(num_layers, [i for i in sublayers if i < num_layers],
                       [i - num_layers for i in sublayers if i >= num_layers], model=model)


def sublayer_ids(profile: SkipProfile) -> list[int]:
    """The inverse of `sublayers_profile`."""
    return [*profile.attn, *(profile.num_layers + i for i in profile.mlp)]


def random_profile(num_layers: int, size: int, rng: random.Random, model: str = "") -> SkipProfile:
    """`size` sublayers drawn uniformly from the 2L (the control a searched profile must beat)."""
    return sublayers_profile(num_layers, rng.sample(range(2 * num_layers), size), model=model)
