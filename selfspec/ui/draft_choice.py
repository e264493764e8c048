"""Which draft the app races: the profile's sublayer skips, read through the draft weights asked for.

The page has a draft-weights choice (auto, full, int8, int4). It starts at SELFSPEC_DRAFT_WEIGHTS
(the deployment's choice for every model), else the profile's own recommendation, else auto: each
candidate measured once per machine and model and the fastest by the cost model taken, within half the
model's memory (profiles/draft_weights.py). `full` is the paper's draft; the low-bit ones hold
quantised copies beside the model (their bytes are shown).
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import ContextManager

from selfspec.engine.draft import DraftModel
from selfspec.engine.settings import DraftSettings
from selfspec.models.loading import LanguageModel
from selfspec.profiles.draft_weights import (SKIP_NOTHING, WEIGHT_CHOICES, WeightsChoice, build_draft, calibration_ids,
                                             megabytes)
from selfspec.profiles.schema import SkipProfile


def deployment_weights() -> str | None:
    """SELFSPEC_DRAFT_WEIGHTS, checked (None when unset)."""
    weights = os.environ.get("SELFSPEC_DRAFT_WEIGHTS") or None
    if weights is not None and weights not in WEIGHT_CHOICES:
        raise ValueError(f"SELFSPEC_DRAFT_WEIGHTS must be one of {', '.join(WEIGHT_CHOICES)}, got {weights!r}")
    return weights


def default_weights(profile: SkipProfile | None) -> str:
    """The choice the page starts with: SELFSPEC_DRAFT_WEIGHTS, else the profile's recommendation, else auto."""
    recommended = profile.decoding.draft_weights if profile is not None and profile.decoding is not None else None
    return deployment_weights() or recommended or "auto"


def draft_weights(settings: DraftSettings) -> str:
    """The weights to draft with: those chosen on the page (in `settings`), else SELFSPEC_DRAFT_WEIGHTS, else auto."""
    return settings.draft_weights or deployment_weights() or "auto"


def make_draft(lm: LanguageModel, profile: SkipProfile, weights: str, max_draft: int,
               device_lock: ContextManager | None = None) -> tuple[DraftModel, str]:
    """The draft and one sentence for the page: its weights, what they add to memory, and auto's reason."""
    calibration = calibration_ids(lm.encode) if weights == "auto" else ()
    with device_lock if device_lock is not None else nullcontext():  # auto measures on the device
        draft, choice = build_draft(lm.model, profile, weights, calibration=calibration, max_draft=max_draft,
                                    key=lm.name)
    return draft, describe_draft(draft, choice)


def describe_draft(draft: DraftModel, choice: WeightsChoice | None) -> str:
    memory = (f", {megabytes(draft.extra_bytes)} of low-bit weights beside the model" if draft.extra_bytes
              else ", no extra memory (the paper's draft)")
    if choice is None:
        return f"Draft weights: {draft.weights}{memory}."
    bounds = ", ".join(f"{name} {bound:.2f}×" for name, bound in choice.predicted.items())
    skips = " The profile's skips are left out: here they cost more acceptance than they save." \
        if choice.weights.endswith(SKIP_NOTHING) else ""
    return (f"Draft: {choice.weights}{memory}, chosen automatically on this device"
            f"{f' (predicted bounds: {bounds})' if bounds else ''}.{skips}")
