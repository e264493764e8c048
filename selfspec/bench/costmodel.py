"""The cost model of draft-and-verify, and how to measure its three numbers on a real model.

Time is counted in units of one full-model forward of one token (what autoregressive decoding pays
per token). One self-speculative step drafts K tokens at c units each, verifies K+1 positions in one
full forward of v units, and commits E tokens on average, where each draft token survives with
probability a (independently, until the first rejection):

    E = 1 + a + ... + a^K = (1 - a^(K+1)) / (1 - a)
    speedup bound = E / (K*c + v)

It is a bound for our loop because it ignores everything outside the forward passes (sampling,
bookkeeping, cache rollback): efficiency = measured speedup / bound says how much of that is lost.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import torch
from torch import nn

from selfspec.engine.cache import truncate
from selfspec.engine.controller import expected_tokens, speedup_bound, verify_costs  # noqa: F401 (the formulas live with their user)
from selfspec.engine.draft import DraftModel
from selfspec.engine.runtime import Engine
from selfspec.engine.devices import synchronize


def bound_for_lengths(a: float, c: float, v: dict[int, float], lengths: Iterable[int],
                      copied: Iterable[int] | None = None, vetted: Iterable[bool] | None = None) -> float | None:
    """The bound for the draft lengths a run actually used (the adaptive exit varies K per step);
    `copied[i]` of step i's tokens came from the context and cost no draft forward, but one when
    `vetted[i]` (the draft's first token vetted them). `v` (unit: one forward) may lack widths the run
    used (copies can be longer than K): those are interpolated."""
    lengths = list(lengths)
    if not lengths:
        return None
    copied = list(copied) if copied is not None else [0] * len(lengths)
    vetted = list(vetted) if vetted is not None else [False] * len(lengths)
    tokens = sum(expected_tokens(a, n) for n in lengths)
    table = verify_costs([(0, 1.0)] + [(int(n), x) for n, x in v.items()], max(lengths))
    cost = sum((n - m + first) * c + table[n] for n, m, first in zip(lengths, copied, vetted))
    return tokens / cost


@dataclass(frozen=True)
class Costs:
    """Measured relative costs at one context length (unit: one full forward of one token)."""

    full_seconds: float  # one full-model forward of one token
    draft_seconds: float  # one draft forward of one token
    c: float  # draft_seconds / full_seconds
    v: dict[int, float]  # K -> full forward over K+1 tokens / full_seconds
    context: int

    def bound(self, a: float, k: int) -> float:
        return speedup_bound(a, self.c, self.v[k], k)

    def to_dict(self) -> dict:
        return asdict(self)


def _interleaved_medians(fns: dict, reps: int, wait) -> dict:
    """Median seconds of each function, timed in turn within every repetition.

    Interleaving keeps ratios fair on a shared machine whose load drifts between repetitions.
    """
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            wait()
            t0 = time.perf_counter()
            fn()
            wait()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


@torch.inference_mode()
def measure_costs(model: nn.Module, draft: DraftModel, prompt_ids: Sequence[int], max_k: int,
                  reps: int = 7, engine: Engine | None = None) -> Costs:
    """Time single forwards after a real prompt: full 1 token, draft 1 token, full K+1 tokens (K=1..max_k)."""
    return measure_draft_costs(model, {"draft": draft}, prompt_ids, max_k, reps, engine)["draft"]


@torch.inference_mode()
def measure_draft_costs(model: nn.Module, drafts: dict[str, DraftModel], prompt_ids: Sequence[int], max_k: int,
                        reps: int = 7, engine: Engine | None = None) -> dict[str, Costs]:
    """`measure_costs` for several drafts at once: the full-model forwards are timed once, every
    draft in the same interleaved rounds, so their c values compare fairly.

    They run through `engine` (a new default one if None), as the decoders run them. Every timed
    forward appends to the prompt's cache and is rolled back, so each sees the same context.
    """
    engine = engine or Engine(model)
    device = engine.device
    prompt = torch.tensor([list(prompt_ids)], device=device)
    n = prompt.shape[1]
    cache = engine.new_cache(n, 0, max_k + 1)
    engine.full(prompt, 0, cache, last_only=True)
    rows = prompt[:, -1:].repeat(1, max_k + 1)  # token values do not change the cost

    def full(q: int):
        forward = engine.full if q == 1 else engine.verify
        def run():
            forward(rows[:, :q], n, cache)
            truncate(cache, n)
        return run

    def draft_one(draft: DraftModel):
        def run():
            engine.draft(draft, rows[:, :1], n, cache)
            truncate(cache, n)
        return run

    fns = {"full": full(1), **{("draft", name): draft_one(d) for name, d in drafts.items()},
           **{k: full(k + 1) for k in range(1, max_k + 1)}}
    for fn in fns.values():  # warm-up
        fn()
    t = _interleaved_medians(fns, reps, lambda: synchronize(device))
    v = {k: t[k] / t["full"] for k in range(1, max_k + 1)}
    return {name: Costs(full_seconds=t["full"], draft_seconds=t[("draft", name)], c=t[("draft", name)] / t["full"],
                        v=v, context=n) for name in drafts}
