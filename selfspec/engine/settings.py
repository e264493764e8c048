"""How the self-speculative decoder drafts: the one settings type, for the engine and for profiles.

A profile records the settings it was searched and measured with (its `decoding` part); every front
end (CLI, app, bench, search) starts from those and applies only what its user set explicitly, via
`DraftSettings.from_profile`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

from selfspec.engine.adaptive import AdaptiveThreshold, DraftExit, FixedThreshold

MAX_CONTEXT_TOKENS = 16  # the controller verifies as many as pay (with the pending token: 17, the widest product bucket)
EXIT_RULES = ("adaptive", "fixed", "off")
DRAFT_WEIGHT_CHOICES = ("auto", "full", "int8", "int4")  # auto: measured here (profiles/draft_weights.py)  # adaptive: the paper's rule; fixed: a constant threshold; off: always K


def _unit_interval(name: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) \
            or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number in [0.0, 1.0], got {value!r}")


@dataclass(frozen=True)
class DraftSettings:
    max_draft: int = 4  # K: most tokens drafted per step
    exit: str = "adaptive"  # one of EXIT_RULES
    threshold: float = 0.6  # fixed threshold, or the adaptive rule's starting gamma
    target_acceptance: float = 0.9  # adaptive rule's alpha
    controller: bool = True  # choose each step's draft length (0 = a plain step) from measured costs
    draft_weights: str | None = None  # which draft front ends build: full, int8, int4, auto (None: auto)
    context_tokens: int = 16  # most tokens per step copied from the context (engine/context.py); 0: off

    def __post_init__(self) -> None:
        if not isinstance(self.max_draft, int) or isinstance(self.max_draft, bool) or self.max_draft < 1:
            raise ValueError(f"max_draft must be an integer >= 1, got {self.max_draft!r}")
        if self.exit not in EXIT_RULES:
            raise ValueError(f"exit must be {', '.join(map(repr, EXIT_RULES))}, got {self.exit!r}")
        _unit_interval("threshold", self.threshold)
        _unit_interval("target_acceptance", self.target_acceptance)
        if not isinstance(self.context_tokens, int) or isinstance(self.context_tokens, bool) \
                or not 0 <= self.context_tokens <= MAX_CONTEXT_TOKENS:
            raise ValueError(f"context_tokens must be an integer in 0..{MAX_CONTEXT_TOKENS}, got {self.context_tokens!r}")
        if not isinstance(self.controller, bool):
            raise ValueError(f"controller must be true or false, got {self.controller!r}")
        if self.draft_weights not in (None, *DRAFT_WEIGHT_CHOICES):
            raise ValueError(f"draft_weights must be {', '.join(map(repr, DRAFT_WEIGHT_CHOICES))}, "
                             f"got {self.draft_weights!r}")

    @classmethod
    def from_profile(cls, profile, **overrides) -> "DraftSettings":
        """The settings `profile` recommends (the defaults if it has none), with the explicit
        `overrides` applied; an override of None means "not given" and keeps the profile's value."""
        recommended = getattr(profile, "decoding", None) or cls()
        unknown = sorted(set(overrides) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"unknown decoding setting(s): {', '.join(unknown)}")
        return replace(recommended, **{k: v for k, v in overrides.items() if v is not None})

    @property
    def widest_step(self) -> int:
        """The most positions one verification may cover: the pending token and K drafts or the copies."""
        return max(self.max_draft, self.context_tokens) + 1

    def new_exit(self) -> DraftExit:
        if self.exit == "adaptive":
            return AdaptiveThreshold(gamma=self.threshold, target=self.target_acceptance)
        return FixedThreshold(self.threshold if self.exit == "fixed" else 0.0)
