"""Which skip profile the app races with, and the sentence that tells the visitor why.

The model's own profile (Hub, cache or bundled, see profiles/hub.py), else skipping nothing; or an upload.
"""

from __future__ import annotations

import logging

from selfspec.models.loading import LanguageModel
from selfspec.profiles.hub import load_profile
from selfspec.profiles.schema import SkipProfile, read_profile

log = logging.getLogger(__name__)

MAX_PROFILE_BYTES = 64 * 1024  # a profile is 1-3 KB of JSON: anything far larger from the public is refused unread


def describe(profile: SkipProfile) -> str:
    return (f"skips {len(profile.attn)} attention and {len(profile.mlp)} MLP sublayers "
            f"of {profile.num_layers} layers")


def default_profile(lm: LanguageModel) -> tuple[SkipProfile, str]:
    """The model's skip profile and a sentence saying where it came from; a lookup never raises."""
    layers = lm.model.config.num_hidden_layers
    resolved = None
    try:
        resolved = load_profile(lm.name, layers, model=lm.model)
    except Exception as exc:  # a profile lookup must never break the app
        log.warning("profile lookup failed for %s: %s", lm.name, exc)
    if resolved is not None and resolved.profile is not None:
        return resolved.profile, f"{resolved.notice} The profile {describe(resolved.profile)}."
    why = resolved.notice if resolved is not None else f"No skip profile is available for {lm.name}."
    return (SkipProfile.none(layers, model=lm.name),
            f"{why} So the draft skips no sublayers: only low-bit draft weights can make it cheaper than the model "
            "(upload a profile to try skipping some).")


def uploaded_profile(lm: LanguageModel, path: str) -> tuple[SkipProfile, str]:
    """A visitor's profile file, checked against the model (ProfileError if it does not fit)."""
    profile = read_profile(path, max_bytes=MAX_PROFILE_BYTES)
    profile.check_fits(lm.model.config.num_hidden_layers)
    return profile, f"Skip profile: your upload, which {describe(profile)}."
