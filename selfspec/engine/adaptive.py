"""Draft-exit thresholds: when to stop drafting and hand the drafts to the full model.

Drafting stops early once the draft's top-1 probability falls below `threshold`. The adaptive rule
is the paper's (Zhang et al. 2024, Sec. 3.3): after each verification the smoothed acceptance rate
AR moves the threshold gamma up when AR is at or below the target and down when above it.

Where it differs from the reference code (dilab-zju/self-speculative-decoding, decoding.py, the
`auto_th_stop_draft` update), on purpose; tests/test_engine.py pins each difference:
- AR starts at the first step's rate; the reference starts its running AR at 0 and smooths it in,
  so its first steps read a rate biased low (half the true one after one step) and raise gamma.
- gamma rises when AR <= alpha, as the paper writes it; the reference raises it only when AR < alpha.
- gamma falls whenever AR > alpha; the reference holds gamma instead when the step drafted the full
  K tokens (a draft that reached K was not stopped by gamma). Holding would need K here, and with
  K reached and acceptance high the lower gamma costs nothing: drafting still stops at K.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class AdaptiveThreshold:
    gamma: float = 0.6  # initial threshold (gamma_0)
    target: float = 0.9  # target acceptance rate (alpha, paper: 0.85..0.90)
    step: float = 0.01  # epsilon
    ar_smoothing: float = 0.5  # beta_1
    gamma_smoothing: float = 0.9  # beta_2
    acceptance: float = field(default=-1.0)  # smoothed AR; negative until the first update

    @property
    def threshold(self) -> float:
        return self.gamma

    def update(self, accepted: int, drafted: int) -> None:
        if drafted <= 0:
            return
        rate = accepted / drafted
        b1 = self.ar_smoothing
        self.acceptance = rate if self.acceptance < 0 else b1 * self.acceptance + (1 - b1) * rate
        proposal = self.gamma + self.step if self.acceptance <= self.target else self.gamma - self.step
        self.gamma = self.gamma_smoothing * self.gamma + (1 - self.gamma_smoothing) * proposal


@dataclass
class FixedThreshold:
    threshold: float = 0.6

    def update(self, accepted: int, drafted: int) -> None:
        pass


def no_exit() -> FixedThreshold:
    """Always draft the maximum number of tokens."""
    return FixedThreshold(0.0)


DraftExit = AdaptiveThreshold | FixedThreshold
