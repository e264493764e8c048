"""`auto` draft weights: which draft (full, int8 or int4 weights, with the model's skip profile and,
if it skips anything, without) is fastest on this machine for this model, predicted from a short
measurement at load.

For each candidate within the memory budget it measures, after the first calibration prompt, the draft's
cost per token c and the verification costs v_k in units of a full forward (bench/costmodel.py), and
the draft's acceptance a as teacher-forced agreement with the full model's own greedy continuation
of each calibration prompt, averaged: one prompt of each kind the built-in set mixes, since a skip set
can agree on one kind of text and not on another. The cost model's bound E(a, k) / (k*c + v_k), at the best k <= K, ranks them. The
choice is cached per machine, model, dtype, profile and K (kernels.py), so the measurement runs once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from selfspec.bench.costmodel import measure_draft_costs
from selfspec.engine.controller import expected_tokens
from selfspec.engine.decoding import autoregressive, context_length
from selfspec.engine.devices import dtype_name
from selfspec.engine.draft import DraftHead, DraftModel
from selfspec.engine.kernels import KernelChoice, cached_choice, machine_busy, remember_choice
from selfspec.engine.lowbit import DRAFT_WEIGHTS, kernel_builders
from selfspec.engine.settings import DRAFT_WEIGHT_CHOICES
from selfspec.profiles.calibration import builtin_prompts
from selfspec.profiles.schema import SkipProfile
from selfspec.profiles.ranking import agreement, full_choices

WEIGHT_CHOICES = DRAFT_WEIGHT_CHOICES
CALIBRATION_TOKENS = 32  # the full model's continuation the acceptance is measured on
SKIP_NOTHING = " skip-nothing"  # a candidate's name suffix: the weights without the profile's skips


def model_bytes(model: nn.Module) -> int:
    """Bytes of the model's own parameters and buffers (tied tensors counted once)."""
    seen = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    return sum(t.numel() * t.element_size() for t in seen.values())


def parse_bytes(text: str) -> int:
    """'300MB', '1.5GB', '0' or a plain byte count -> bytes."""
    units = {"kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 2**10, "mib": 2**20, "gib": 2**30, "b": 1}
    value = text.strip().lower()
    for unit, size in sorted(units.items(), key=lambda u: -len(u[0])):
        if value.endswith(unit):
            value, scale = value[: -len(unit)], size
            break
    else:
        scale = 1
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"a memory size looks like 300MB, 1.5GB or 0; got {text!r}") from None
    if number < 0:
        raise ValueError(f"a memory size cannot be negative; got {text!r}")
    return int(number * scale)


def megabytes(n: int | None) -> str:
    """Bytes for people: '0 B', or '12.3 MB (12,345,678 bytes)'."""
    if not n:
        return "0 B"
    return f"{n / 1e6:.1f} MB ({n:,} bytes)"


@dataclass(frozen=True)
class Candidate:
    weights: str  # e.g. "int4", or "int4 skip-nothing" for the weights without the profile's skips
    extra_bytes: int
    c: float | None = None  # draft token / full forward
    v: dict[int, float] = field(default_factory=dict)  # k -> verification of k drafts / full forward
    acceptance: float | None = None  # teacher-forced agreement with the full model
    best_k: int | None = None
    bound: float | None = None  # predicted speedup at best_k (forward passes only)
    note: str = ""  # why it was not measured

    def to_dict(self) -> dict:
        return {"weights": self.weights, "extra_bytes": self.extra_bytes, "c": self.c, "v": self.v,
                "acceptance": self.acceptance, "best_k": self.best_k, "bound": self.bound, "note": self.note}


@dataclass(frozen=True)
class WeightsChoice:
    weights: str  # the winning candidate's name
    budget_bytes: int
    candidates: tuple[Candidate, ...] = ()  # empty when read from the cache
    predicted: dict[str, float] = field(default_factory=dict)  # weights -> predicted speedup bound
    cached: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"weights": self.weights, "budget_bytes": self.budget_bytes, "predicted": self.predicted,
                "cached": self.cached, "seconds": round(self.seconds, 2),
                "candidates": [c.to_dict() for c in self.candidates]}


def best_bound(a: float, c: float, v: dict[int, float]) -> tuple[int, float]:
    bounds = {k: expected_tokens(a, k) / (k * c + vk) for k, vk in v.items()}
    k = max(bounds, key=bounds.get)
    return k, bounds[k]


def calibration_ids(encode: Callable[[str], list[int]]) -> list[list[int]]:
    """The prompts `auto` measures on, as token ids: one of each kind of the built-in calibration set
    (summarisation, code, question answering)."""
    return [encode(text) for text in builtin_prompts()[::2]]


def fitting(model: nn.Module, calibration: Sequence[Sequence[int]]) -> list[Sequence[int]]:
    """The calibration prompts whose continuation fits the model's context (at least the shortest one)."""
    limit = context_length(model)
    if limit is None:
        return list(calibration)
    return [ids for ids in calibration if len(ids) + CALIBRATION_TOKENS < limit] or [min(calibration, key=len)]


def calibration_sequence(model: nn.Module, calibration_ids: Sequence[int]) -> list[int]:
    """A calibration prompt and the full model's own greedy continuation of it (what acceptance is measured on)."""
    generated = [t for r in autoregressive(model, list(calibration_ids), CALIBRATION_TOKENS) for t in r.token_ids]
    return list(calibration_ids) + generated


def rank(model: nn.Module, drafts: dict[str, DraftModel], sequences: Sequence[list[int]],
         prompt_lengths: Sequence[int], max_draft: int) -> list[Candidate]:
    """Each draft's c and v (timed together, after the first sequence's prompt), its teacher-forced acceptance
    over every sequence's continuation (the mean of the sequences'), and its best bound."""
    costs = measure_draft_costs(model, drafts, sequences[0], max_draft, reps=3)
    targets = full_choices(model, sequences)
    ranked = []
    for name, draft in drafts.items():
        a = sum(agreement(model, [sequence], [target], draft, skip=length - 1)
                for sequence, target, length in zip(sequences, targets, prompt_lengths)) / len(sequences)
        c, v = costs[name].c, costs[name].v
        k, bound = best_bound(a, c, v)
        ranked.append(Candidate(name, draft.extra_bytes, round(c, 4), {k_: round(x, 4) for k_, x in v.items()},
                                round(a, 4), k, round(bound, 4)))
    return ranked


def choose_weights(model: nn.Module, profile: SkipProfile, calibration: Sequence[Sequence[int]], max_draft: int,
                   budget_bytes: int, key: str, head: DraftHead | None = None) -> tuple[DraftModel, WeightsChoice]:
    """Measure every candidate within `budget_bytes` and return the draft predicted fastest."""
    t0 = time.perf_counter()
    device = model.get_input_embeddings().weight.device
    # The kernels a low-bit draft may use are part of the key: a new one (a new release) changes every cost.
    kernels = sorted({name for bits in DRAFT_WEIGHTS[1:] for name in kernel_builders(bits, model.dtype, device)})
    cache_key = (f"draft-weights:{key}:{dtype_name(model.dtype)}:attn{list(profile.attn)}"
                 f":mlp{list(profile.mlp)}:K{max_draft}:budget{budget_bytes}:head{'' if head is None else len(head.vocabulary)}"
                 f":kernels{','.join(kernels)}:calibration{len(calibration)}")
    nothing = SkipProfile.none(profile.num_layers, model=profile.model)
    cached = cached_choice(cache_key, device)
    if cached is not None and cached.name.removesuffix(SKIP_NOTHING) in DRAFT_WEIGHTS:
        weights = cached.name.removesuffix(SKIP_NOTHING)
        chosen = nothing if cached.name.endswith(SKIP_NOTHING) else profile
        return DraftModel(model, chosen, head, weights=weights), WeightsChoice(
            cached.name, budget_bytes, (), dict(cached.milliseconds), True, time.perf_counter() - t0)
    sequences = [calibration_sequence(model, ids) for ids in calibration]
    over, drafts = [], {}
    for weights in DRAFT_WEIGHTS:
        draft = DraftModel(model, profile, head, weights=weights)
        if draft.extra_bytes > budget_bytes:
            over.append(Candidate(weights, draft.extra_bytes, note="over the memory budget"))
            continue
        drafts[weights] = draft
        if profile.skipped_sublayers:  # the profile's skips may cost more acceptance than they save
            drafts[weights + SKIP_NOTHING] = draft.with_profile(nothing)
    measured = rank(model, drafts, sequences, [len(ids) for ids in calibration], max_draft)
    best = max(measured, key=lambda c: (c.bound, -c.extra_bytes))
    predicted = {c.weights: c.bound for c in measured}
    # Costs measured while other work ran would mislead every later process: such a choice holds for this one.
    remember_choice(KernelChoice(cache_key, best.weights, predicted, trusted=not machine_busy(device)), device)
    return drafts[best.weights], WeightsChoice(best.weights, budget_bytes, tuple(measured + over), predicted, False,
                                               time.perf_counter() - t0)


def build_draft(model: nn.Module, profile: SkipProfile, weights: str, *, calibration: Sequence[Sequence[int]] = (),
                max_draft: int = 4, budget_bytes: int | None = None, key: str = "",
                head: DraftHead | None = None) -> tuple[DraftModel, WeightsChoice | None]:
    """The draft for `weights` ("auto" measures and chooses on the `calibration` prompts' token ids, e.g.
    calibration_ids(encode)); the choice is None unless auto."""
    if weights not in WEIGHT_CHOICES:
        raise ValueError(f"draft weights must be one of {', '.join(WEIGHT_CHOICES)}; got {weights!r}")
    if weights != "auto":
        return DraftModel(model, profile, head, weights=weights), None
    if not calibration or not all(calibration):
        raise ValueError("auto draft weights need calibration prompts' token ids")
    budget = model_bytes(model) // 2 if budget_bytes is None else budget_bytes
    with torch.inference_mode():
        return choose_weights(model, profile, fitting(model, calibration), max_draft, budget,
                              key or model.config.model_type, head)
