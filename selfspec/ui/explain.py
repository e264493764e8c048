"""Why self-speculation is faster or slower on this device: a race's costs on one clock, and the verdict.

Every time here is read from the race's clock (race.py times each step alone, both lanes alike): a
full-model token is the autoregressive lane's mean decode step; a speculative step's time is split
into drafting and verifying by the shares the decoder itself recorded for that step. In units of a
full-model token, c is one draft token and v one verification; with the per-token acceptance a, the
cost model (bench/costmodel.py) bounds the speedup by E/(K*c+v) for the draft lengths K used.
"""

from __future__ import annotations

from dataclasses import dataclass

from selfspec.bench.costmodel import bound_for_lengths
from selfspec.engine.metrics import acceptance_per_token
from selfspec.ui.race import Race

EXPENSIVE_DRAFT = 0.7  # c above this: the draft saves too little per token
EXPENSIVE_VERIFY = 1.3  # v above this: checking K+1 positions costs well over one token (a GPU: ~1.1)
POOR_ACCEPTANCE = 0.6


@dataclass(frozen=True)
class RaceCosts:
    full_ms: float  # one autoregressive token
    draft_ms: float  # drafting time per proposed token (copied tokens count, and cost nothing)
    verify_ms: float  # one verification pass
    steps: int  # speculative steps
    lengths: tuple[int, ...]  # tokens proposed at each step (copied and drafted)
    committed: int  # tokens the speculative steps committed
    acceptance: float | None  # per-token acceptance a (bench/costmodel.py's estimate)
    copied: int = 0  # of the proposed tokens, those copied from the context

    @property
    def c(self) -> float:
        return self.draft_ms / self.full_ms

    @property
    def drafted(self) -> int:
        """Proposed tokens the draft model made (the rest were copied)."""
        return sum(self.lengths) - self.copied

    @property
    def draft_token_ms(self) -> float | None:
        """One token the draft model made: the drafting time is theirs alone (copies are free)."""
        return self.draft_ms * sum(self.lengths) / self.drafted if self.drafted else None

    @property
    def draft_token_c(self) -> float:
        """`draft_token_ms` in full-model tokens (0 when every proposal was a copy)."""
        return self.draft_token_ms / self.full_ms if self.drafted else 0.0

    @property
    def v(self) -> float:
        return self.verify_ms / self.full_ms

    @property
    def step_ms(self) -> float:
        return (self.draft_ms * sum(self.lengths) + self.verify_ms * self.steps) / self.steps

    @property
    def ms_per_token(self) -> float:
        return self.step_ms * self.steps / self.committed

    @property
    def bound(self) -> float | None:
        if self.acceptance is None:
            return None
        return bound_for_lengths(self.acceptance, self.c, {n: self.v for n in self.lengths}, self.lengths)


def race_costs(race: Race) -> RaceCosts | None:
    """The race's per-token costs, all from the race's clock; None until both lanes have decode steps."""
    ar = [s for r, s in zip(race.autoregressive.records, race.autoregressive.step_seconds) if r.kind == "decode"]
    spec = [(r, s) for r, s in zip(race.speculative.records, race.speculative.step_seconds)
            if r.kind == "speculate" and r.seconds > 0]
    drafted = sum(r.drafted for r, _ in spec)
    if not ar or not spec or not drafted:
        return None
    # The decoder's own clock only says how each step divides between drafting and verifying.
    draft_s = sum(s * r.draft_seconds / r.seconds for r, s in spec)
    verify_s = sum(s * r.verify_seconds / r.seconds for r, s in spec)
    return RaceCosts(full_ms=1000 * sum(ar) / len(ar), draft_ms=1000 * draft_s / drafted,
                     verify_ms=1000 * verify_s / len(spec), steps=len(spec),
                     lengths=tuple(r.drafted for r, _ in spec), committed=sum(len(r.token_ids) for r, _ in spec),
                     acceptance=acceptance_per_token([r for r, _ in spec]), copied=sum(r.copied for r, _ in spec))


def cost_line(costs: RaceCosts) -> str:
    """What one speculative step buys and costs, against one full-model token."""
    per_step = sum(costs.lengths) / costs.steps
    if costs.copied:
        drafted = (f"; {costs.drafted / costs.steps:.1f} drafted at {costs.draft_token_ms:.0f} ms each"
                   if costs.drafted else "")
        proposed = (f"proposes {per_step:.1f} tokens ({costs.copied / costs.steps:.1f} copied from the context, "
                    f"free{drafted})")
    else:
        proposed = f"drafts {per_step:.1f} tokens at {costs.draft_ms:.0f} ms each"
    return (f"a full-model token takes {costs.full_ms:.0f} ms. A speculative step {proposed}, verifies them in one "
            f"{costs.verify_ms:.0f} ms pass and commits {costs.committed / costs.steps:.2f} tokens: "
            f"{costs.ms_per_token:.0f} ms per token.")


def verdict(costs: RaceCosts) -> str:
    """One line: the speedup this device allows for this model and draft, and what limits it."""
    bound = costs.bound
    if bound is None:
        return ""
    limits = []
    if costs.draft_token_c > EXPENSIVE_DRAFT:
        limits.append(f"a draft token costs {costs.draft_token_c:.0%} of a full-model token (the draft is too little "
                      f"cheaper than the model here)")
    if costs.v > EXPENSIVE_VERIFY:
        limits.append(f"checking the drafts costs {costs.v:.2f} full-model tokens (this device pays for every "
                      f"extra position; a GPU pays about 1.1)")
    if costs.acceptance < POOR_ACCEPTANCE:
        limits.append(f"the draft agrees with the full model on only {costs.acceptance:.0%} of its tokens")
    per = " a proposed token, copies free" if costs.copied else ""
    model = f"(E/(K·c+v) with c = {costs.c:.2f}{per}, v = {costs.v:.2f}, a = {costs.acceptance:.2f})"
    if bound >= 1:
        head = f"this device allows up to {bound:.2f}× {model}"
        return head + (f", held back because {'; '.join(limits)}." if limits else
                       ": drafts are cheap, checking them is nearly free and most are kept.")
    reasons = "; ".join(limits) if limits else "what drafting and checking cost is about what they save"
    return f"slower is expected on this device, at most {bound:.2f}× {model}: {reasons}."
