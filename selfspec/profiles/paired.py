"""Is one decoder faster than another beyond noise? A paired comparison of timings taken side by side.

Two candidates timed round-robin on the same prompts give pairs (this prompt, this repetition) that
saw the same machine load, so comparing within pairs removes most of a shared machine's noise:
- wins: in how many pairs the candidate was faster;
- an exact two-sided sign test on those wins (ties dropped): the chance of a split at least this
  uneven if neither were faster;
- the speedup (geometric mean of the paired time ratios) with a percentile bootstrap interval over pairs.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Paired:
    wins: int  # pairs where the candidate was faster
    pairs: int
    p_value: float  # two-sided sign test
    speedup: float  # control time / candidate time, geometric mean over pairs
    low: float  # 95% bootstrap interval of `speedup`
    high: float

    def summary(self) -> str:
        return (f"{self.wins}/{self.pairs} | {self.p_value:.2g} | "
                f"{self.speedup:.3f}x [{self.low:.3f}, {self.high:.3f}]")


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided binomial test of wins vs losses at p = 1/2."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(wins, losses) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired(candidate: Sequence[float], control: Sequence[float], resamples: int = 2000, seed: int = 0) -> Paired:
    """Compare per-pair times (seconds per token) of a candidate and a control, pair i with pair i."""
    if len(candidate) != len(control) or not candidate:
        raise ValueError(f"paired timings need the same, non-zero count, got {len(candidate)} and {len(control)}")
    logs = [math.log(b / a) for a, b in zip(candidate, control)]  # > 0: the candidate was faster
    wins, losses = sum(x > 0 for x in logs), sum(x < 0 for x in logs)
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(logs, k=len(logs))) / len(logs) for _ in range(resamples))
    low, high = means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]
    return Paired(wins, len(logs), sign_test(wins, losses), math.exp(sum(logs) / len(logs)),
                  math.exp(low), math.exp(high))
