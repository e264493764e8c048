"""Timing decoders end to end on calibration prompts: one profile (`measure`), or several side by side
(`compare`, round-robin so that noise hits all alike). The figures come from engine/metrics.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from torch import nn

from selfspec.engine.decoding import autoregressive, self_speculative
from selfspec.engine.draft import DraftModel
from selfspec.engine.metrics import DecodeMetrics, decode_metrics
from selfspec.engine.settings import DraftSettings
from selfspec.profiles.schema import SkipProfile


@dataclass(frozen=True)
class Measurement:
    """Draft-and-verify (or autoregressive, profile None) over all calibration prompts, prefill excluded."""

    seconds_per_token: float
    tokens: int
    acceptance: float | None = None
    mean_accepted_tokens: float | None = None
    draft_seconds_per_token: float | None = None  # per drafted token
    prompt_seconds_per_token: tuple[float, ...] = ()  # each prompt's own, in order (for paired comparisons)


def measure(model: nn.Module, prompts: Sequence[Sequence[int]], profile: SkipProfile | DraftModel | None,
            max_new_tokens: int, settings: DraftSettings = DraftSettings()) -> Measurement:
    """Time greedy decoding of every prompt; the prefill is the same for both decoders, so it is left out.

    `profile`: None for autoregressive decoding; a profile (full-weight draft) or a built draft."""
    draft = profile if profile is None or isinstance(profile, DraftModel) else DraftModel(model, profile)
    runs = [list(autoregressive(model, prompt, max_new_tokens) if draft is None
                 else self_speculative(model, prompt, draft, max_new_tokens, settings=settings))
            for prompt in prompts]
    m = decode_metrics(runs)
    return Measurement(
        seconds_per_token=_per_token(m), tokens=m.tokens, acceptance=m.acceptance,
        mean_accepted_tokens=m.mean_accepted_tokens, draft_seconds_per_token=m.draft_seconds_per_token,
        prompt_seconds_per_token=tuple(_per_token(decode_metrics([run])) for run in runs),
    )


def _per_token(m: DecodeMetrics) -> float:
    return m.seconds / max(m.tokens, 1)


def warm_up(model: nn.Module, prompts) -> None:
    """Run both decoders once, untimed: first calls pay one-time costs that would bias the first candidate."""
    layers = model.config.num_hidden_layers
    measure(model, prompts[:1], None, 4)
    measure(model, prompts[:1], SkipProfile(layers, attn=[layers - 1]), 4)

def median(ms: list[Measurement]) -> Measurement:
    """The median rep by time per token (the lower middle one for an even count)."""
    return sorted(ms, key=lambda m: m.seconds_per_token)[(len(ms) - 1) // 2]

def compare(model: nn.Module, prompts, candidates: dict[str, tuple[SkipProfile | DraftModel | None, DraftSettings]],
            max_new_tokens: int, reps: int = 3) -> dict[str, list[Measurement]]:
    """Every candidate timed `reps` times, round-robin so that noise hits all alike: {name: one per rep}."""
    times: dict[str, list[Measurement]] = {name: [] for name in candidates}
    warm_up(model, prompts)
    for _ in range(reps):
        for name, (profile, settings) in candidates.items():
            times[name].append(measure(model, prompts, profile, max_new_tokens, settings))
    return times

def paired_timings(ms: list[Measurement]) -> list[float]:
    """Seconds per token of every (rep, prompt) pair, in the same order for every candidate."""
    return [t for m in ms for t in m.prompt_seconds_per_token]
