"""The app's form: values from the page (or an API client) checked and turned into decoding settings.

Everything here is plain data, so the rules are tested without a browser and the app only wires widgets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from selfspec.engine.sampling import Sampling
from selfspec.engine.settings import DRAFT_WEIGHT_CHOICES, DraftSettings
from selfspec.profiles.schema import SkipProfile
from selfspec.ui.draft_choice import default_weights

MAX_NEW_TOKENS = 1024
MAX_DRAFT = 16
MODES = ("greedy", "sampling")


@dataclass(frozen=True)
class Form:
    max_new_tokens: int
    sampling: Sampling
    max_draft: int
    draft_exit: bool  # stop drafting when the draft is unsure (the profile's rule, else adaptive)
    draft_weights: str = "auto"  # one of DRAFT_WEIGHT_CHOICES (ui/draft_choice.py)
    controller: bool = True  # choose each step's draft length from measured costs (0: a plain step)

    def settings(self, profile: SkipProfile | None) -> DraftSettings:
        """The profile's recommended settings with the form's draft length, exit switch, weights and controller."""
        recommended = DraftSettings.from_profile(profile)
        if not self.draft_exit:
            exit = "off"
        else:  # the profile's exit rule and threshold, unless it recommends none
            exit = None if recommended.exit != "off" else "adaptive"
        return DraftSettings.from_profile(profile, max_draft=self.max_draft, exit=exit,
                                          draft_weights=self.draft_weights, controller=self.controller)


def whole_number(value, name: str, low: int, high: int) -> int:
    """A whole number in [low, high] from a form value (float, string, ...), or one clear ValueError."""
    try:
        number = math.nan if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not number.is_integer() or not low <= number <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    return int(number)


def parse_form(max_new_tokens, mode, temperature, top_p, seed, max_draft, draft_exit, draft_weights="auto",
               controller=True) -> Form:
    """Form values -> a Form; absurd values raise ValueError."""
    max_new_tokens = whole_number(max_new_tokens, "max new tokens", 1, MAX_NEW_TOKENS)
    max_draft = whole_number(max_draft, "max draft length", 1, MAX_DRAFT)
    if draft_weights not in DRAFT_WEIGHT_CHOICES:
        raise ValueError(f"draft weights must be one of {', '.join(DRAFT_WEIGHT_CHOICES)}, got {draft_weights!r}")
    if mode not in MODES:
        raise ValueError(f"decoding must be 'greedy' or 'sampling', got {mode!r}")
    if mode == "greedy":
        sampling = Sampling()
    else:
        if temperature is None or not 0 < temperature <= 5:
            raise ValueError(f"temperature must be in (0, 5] when sampling, got {temperature!r}")
        if top_p is None or not 0 < top_p <= 1:
            raise ValueError(f"top-p must be in (0, 1], got {top_p!r}")
        seed = None if seed is None or (isinstance(seed, float) and math.isnan(seed)) else whole_number(
            seed, "seed", 0, 2**63 - 1)
        sampling = Sampling(temperature=float(temperature), top_p=float(top_p), seed=seed)
    return Form(max_new_tokens, sampling, max_draft, bool(draft_exit), draft_weights, bool(controller))


def form_defaults(profile: SkipProfile | None) -> dict[str, str]:
    """Query-string defaults for a profile: the draft length and exit it was measured with, and the draft
    weights the page starts with (ui/draft_choice.py)."""
    defaults = {"draft_weights": default_weights(profile)}
    if profile is None or profile.decoding is None:
        return defaults
    return {**defaults, "max_draft": str(profile.decoding.max_draft), "adaptive": str(profile.decoding.exit != "off")}
