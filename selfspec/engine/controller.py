"""What to verify next, from the run's own measured costs and acceptance.

The cost model of draft-and-verify: a step that verifies n proposed tokens, each surviving with
chance a_i given the previous ones survived, commits 1 + a_1 + a_1 a_2 + ... tokens on average
(the full model's own token comes with every verification). Two sources propose: tokens copied from
the context (engine/context.py), free to propose, and the model's draft, d seconds a token. Copies
come in runs: once the text is copying it goes on copying for many tokens, and a copy fails mostly at
its first token (the text was not copying there). So a copy's first token is kept with chance b and
each later one, given the ones before it were kept, with chance a_c (`CopyOdds`). Copies come first,
the draft continues after them, so a plan (m copies, k drafts) commits
    E(m, k) = 1 + b (1 + a_c + ... + a_c^(m-1)) + b a_c^(m-1) (a + ... + a^k)
tokens in r(m) + (k - 1) d + v(m + k) seconds, where v(n) is the measured verification of n proposed
tokens, v(0) = f is a plain one-token step, and r(m) is the draft's first forward, which must read the
m copies before drafting after them (r(0) = d; a wide low-bit forward can cost several drafted tokens,
which keeps the draft off the end of long copies). `best_plan` takes the plan with the most tokens per
second, so a source is used only when the tokens it is expected to add pay for the width and draft
time it adds, and (0, 0), a plain step, whenever nothing pays: that is what keeps self-speculation
from being much slower than plain decoding.

A source not in the best plan is probed now and then, so a source that starts to pay (the text
became predictable, or started copying) is noticed: one token of it is added to the cheapest plan
that can carry it (a draft token goes alone: behind copies it would be observed only if all of them
survived, and its drafting time would be mixed with reading them). Each probe's expected loss
against the best plan is known from the same numbers, and the next probe of that source waits long
enough that probes waste at most `explore` of the time spent meanwhile, and, while its probes keep
failing, twice as long as the last time. A source nothing is known about yet is probed at its first
chance, with that one token: a short first draft, never K before acceptance is known.

Acceptance is estimated from few steps, where a bare maximum-likelihood estimate swings to 1 or 0 on a
single token (one matched copied token made a 16-token copy look certain). Each source's estimate
therefore starts from a few pseudo-tokens of prior (`Source.prior_kept`, `prior_failures`) that the
run's own evidence soon outweighs. A run starts from what the last run with the same draft measured
(`Carried`), when there was one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, NamedTuple


def expected_tokens(a: float, k: int) -> float:
    """Tokens committed per step with K drafts accepted with probability a each (correction included)."""
    if not 0 <= a <= 1:
        raise ValueError(f"acceptance must be in [0, 1], got {a}")
    if a == 1:
        return k + 1.0
    return (1 - a ** (k + 1)) / (1 - a)


def speedup_bound(a: float, c: float, v: float, k: int) -> float:
    """E / (K*c + v): the speedup over autoregressive decoding if only forward passes cost time."""
    return expected_tokens(a, k) / (k * c + v)


class CopyOdds(NamedTuple):
    """How likely copied tokens are kept: the first of a step's copies with chance `first`, each later
    one, given the ones before it were kept, with chance `then`. One acceptance for all (first = then)
    undervalues long copies: on copy-heavy text nearly every failure falls on a first token."""

    first: float
    then: float

    def tokens(self, copies: int) -> float:
        """Expected tokens a step verifying `copies` copies (and nothing else) commits."""
        return 1.0 if not copies else 1.0 + self.first * expected_tokens(self.then, copies - 1)

    def reach(self, copies: int) -> float:
        """The chance that all `copies` copies are kept."""
        return 1.0 if not copies else self.first * self.then ** (copies - 1)


def plan_tokens(copy: CopyOdds, copies: int, draft_acceptance: float, drafts: int) -> float:
    """E(m, k): expected tokens committed by a step verifying `copies` copied tokens, then `drafts` drafted."""
    return copy.tokens(copies) + copy.reach(copies) * (expected_tokens(draft_acceptance, drafts) - 1)


def drafting_seconds(copies: int, drafts: int, draft_seconds: float,
                     reading_seconds: Callable[[int], float] | None = None) -> float:
    """The draft's time in a plan: r(m) + (k - 1) d, nothing when k = 0. Without `reading_seconds` (r),
    reading the copies is taken as free: k d."""
    if not drafts:
        return 0.0
    first = reading_seconds(copies) if copies and reading_seconds is not None else draft_seconds
    return first + (drafts - 1) * draft_seconds


def plan_seconds(copies: int, drafts: int, draft_seconds: float, verify_seconds: Callable[[int], float],
                 reading_seconds: Callable[[int], float] | None = None) -> float:
    """Drafting plus v(m + k); v(0) is a plain step."""
    return drafting_seconds(copies, drafts, draft_seconds, reading_seconds) + verify_seconds(copies + drafts)


Plan = tuple[int, int]  # (tokens copied from the context, tokens drafted by the model)


def plans(copies: int, drafts: int, limit: int) -> list[Plan]:
    """Every plan of at most `copies` copied and `drafts` drafted tokens, `limit` in all, narrowest first."""
    return sorted(((m, k) for m in range(min(copies, limit) + 1) for k in range(min(drafts, limit - m) + 1)), key=sum)


def best_plan(candidates: list[Plan], copy: CopyOdds, draft_acceptance: float, draft_seconds: float,
              verify_seconds: Callable[[int], float],
              reading_seconds: Callable[[int], float] | None = None) -> tuple[Plan, float]:
    """The candidate with the most expected tokens per second, and that rate."""
    copied = [(copy.tokens(m), copy.reach(m)) for m in range(max(m for m, _ in candidates) + 1)]
    drafted = [expected_tokens(draft_acceptance, k) - 1 for k in range(max(k for _, k in candidates) + 1)]
    best, best_rate = None, -1.0
    for m, k in candidates:  # in order of width: a tie keeps the narrower plan
        seconds = plan_seconds(m, k, draft_seconds, verify_seconds, reading_seconds)
        tokens, reach = copied[m]
        rate = (tokens + reach * drafted[k]) / seconds
        if rate > best_rate:
            best, best_rate = (m, k), rate
    return best, best_rate


def probe_waste(plan: Plan, best_rate: float, copy: CopyOdds, draft_acceptance: float,
                draft_seconds: float, verify_seconds: Callable[[int], float],
                reading_seconds: Callable[[int], float] | None = None) -> float:
    """Seconds a step of `plan` is expected to lose against the best plan: its time less the time the
    best plan takes to commit as many tokens."""
    tokens = plan_tokens(copy, plan[0], draft_acceptance, plan[1])
    return max(0.0, plan_seconds(*plan, draft_seconds, verify_seconds, reading_seconds) - tokens / best_rate)


def probe_wait(waste: float, plain_seconds: float, explore: float) -> int:
    """Steps a probe wasting `waste` seconds must be apart from the next so that probes cost at most
    `explore` of the plain-step time spent meanwhile."""
    return max(1, math.ceil(waste / (explore * plain_seconds)))


def next_interval(interval: int, wait: int, longest: int) -> int:
    """Steps before the next probe of a source whose probes fail: twice the last wait, at least `wait`."""
    return min(longest, max(2 * interval, wait))


def verify_costs(points: list[tuple[int, float]], widest: int) -> list[float]:
    """Cost of verifying 0..widest proposed tokens from (tokens, cost) points (0: a plain step):
    measured, else interpolated between the widths measured, else extrapolated along the average slope
    from the narrowest point to the widest (never falling). The slope between the two widest alone is
    noise-prone: one slow measurement at 3 or 4 priced 16 copies at twice their cost, and since a
    width priced out is never verified, it was never corrected."""
    points = sorted(points)
    table = []
    for n in range(widest + 1):
        below = max((p for p in points if p[0] <= n), key=lambda p: p[0])
        above = min((p for p in points if p[0] >= n), key=lambda p: p[0], default=None)
        if above is None and len(points) > 1:  # past the widest measured: the average slope, never falling
            (n0, v0), (n1, v1) = points[0], points[-1]
            table.append(v1 + max(0.0, (v1 - v0) / (n1 - n0)) * (n - n1))
        elif above is None or above[0] == below[0]:
            table.append(below[1])
        else:
            (n0, v0), (n1, v1) = below, above
            table.append(v0 + (v1 - v0) * (n - n0) / (n1 - n0))
    return table


@dataclass
class Average:
    """Exponentially weighted mean; None until the first sample."""

    weight: float = 0.3  # of the newest sample
    value: float | None = None

    def add(self, x: float) -> None:
        self.value = x if self.value is None else (1 - self.weight) * self.value + self.weight * x


@dataclass
class Source:
    """What one source of proposed tokens (context copies, or the model's draft) earned in this run."""

    memory: float = 0.9  # per observed step, how much of the earlier evidence is kept
    kept: float = 0.0  # decayed count of its tokens the full model kept
    failures: float = 0.0  # decayed count of its steps that ended in a rejected token of it
    idle: int = 0  # steps since one of its tokens was last verified
    interval: int = 1  # idle steps before the next probe, while it is not in the best plan
    prior_kept: float = 0.5  # pseudo-counts the estimate starts from (they never decay): a prior
    prior_failures: float = 0.5  # acceptance of prior_kept / (prior_kept + prior_failures)

    def prior(self) -> float:
        return self.prior_kept / (self.prior_kept + self.prior_failures)

    def acceptance(self) -> float | None:
        """Per-token acceptance once anything was observed, else None. A step keeps a geometric number
        of a source's tokens, so the maximum-likelihood estimate is kept / (kept + steps that rejected
        one); the prior's pseudo-counts are added to both."""
        if self.kept + self.failures <= 0:
            return None
        return (self.kept + self.prior_kept) / (self.kept + self.failures + self.prior_kept + self.prior_failures)

    def observe(self, kept: int, failed: bool) -> None:
        self.kept = self.memory * self.kept + kept
        self.failures = self.memory * self.failures + failed
        if kept:
            self.interval = 1  # the intervals double only while probes keep failing

    def due(self) -> bool:
        return self.acceptance() is None or self.idle >= self.interval


@dataclass(frozen=True)
class Carried:
    """What a run leaves the next run with the same draft: the costs it measured (a machine's costs barely
    change between prompts) and each source's evidence, discounted to at most `EVIDENCE` tokens (the
    prompts differ: it is a prior, which the new run's own steps soon outweigh)."""

    full: float | None
    draft: float | None
    verify: dict[int, float]
    reading: dict[int, float]
    sources: dict[str, tuple[float, float]]  # source -> (kept, failures)

    EVIDENCE = 3.0


@dataclass
class DraftLength:
    max_draft: int  # K: the most tokens one step drafts
    explore: float = 0.03  # the most of the run's time probes may waste
    max_probe: int = 64  # the longest a source waits for its next probe
    full: Average = field(default_factory=Average)  # seconds of a plain (one-token) step
    draft: Average = field(default_factory=Average)  # seconds per drafted token
    verify: dict[int, Average] = field(default_factory=dict)  # tokens verified -> seconds of the verification
    reading: dict[int, Average] = field(default_factory=dict)  # copies read -> seconds of the draft's first forward
    # A step's first copied token after a context match of 2+ tokens: even odds at first.
    copies: Source = field(default_factory=Source)
    # A step's first copied token after a one-token match, a weaker guess (1 in 4 at first).
    short_copies: Source = field(default_factory=lambda: Source(prior_kept=0.25, prior_failures=0.75))
    # Each later copied token, given the ones before it were kept: a copy that has started goes on
    # (9 in 10 at first, a light prior: one run's tokens soon outweigh it).
    copy_runs: Source = field(default_factory=lambda: Source(prior_kept=0.9, prior_failures=0.1))
    # The last proposal matched all the full model committed: the text is copying, and this step's
    # first copied token continues that run (it is a later token of the run, not a first one).
    copying: bool = False
    # The model's own draft: a draft worth building keeps most of its tokens (3 in 4 at first).
    drafts: Source = field(default_factory=lambda: Source(prior_kept=1.5, prior_failures=0.5))

    SOURCES = ("copies", "short_copies", "copy_runs", "drafts")

    def __post_init__(self) -> None:
        if not isinstance(self.max_draft, int) or self.max_draft < 1:
            raise ValueError(f"max_draft must be a positive integer, got {self.max_draft!r}")

    def acceptance(self) -> float | None:
        return self.drafts.acceptance()

    def copy_odds(self, match: int = 2) -> CopyOdds | None:
        """The odds of the next copies, after a context match of `match` tokens; None while nothing is
        known of them (no first copied token after such a match observed, and no run going on)."""
        then = self.copy_runs.acceptance()
        then = self.copy_runs.prior() if then is None else then
        if self.copying:
            return CopyOdds(then, then)
        first = self.copy_source(match).acceptance()
        return None if first is None else CopyOdds(first, then)

    def copy_source(self, match: int) -> Source:
        """The source of first copied tokens for a proposal whose context match was `match` tokens long."""
        return self.short_copies if match < 2 else self.copies

    def verify_seconds(self, n: int) -> float:
        """Seconds to verify n proposed tokens (n = 0: a plain step)."""
        return self.verify_table(n)[n]

    def verify_table(self, widest: int) -> list[float]:
        """Seconds to verify 0..widest proposed tokens (0: a plain step), from what this run measured."""
        points = [(n, avg.value) for n, avg in self.verify.items() if avg.value is not None]
        return verify_costs([(0, self.full.value)] + points, widest)

    def reading_table(self, widest: int) -> list[float]:
        """r(0..widest): seconds of a draft forward that reads m copied tokens and drafts one (r(0) = d).
        Measured where it was, else interpolated; before anything is measured, d scaled as the full
        model's verification scales with width (v(m) / f)."""
        d = self.draft.value or 0.0
        points = [(m, avg.value) for m, avg in self.reading.items() if avg.value is not None]
        if points:
            return verify_costs([(0, d)] + points, widest)
        full = self.full.value
        return [d * v / full if full else d for v in self.verify_table(widest)]

    def carried(self) -> Carried:
        """This run's costs and discounted evidence, for the next run with the same draft."""
        def discounted(source: Source) -> tuple[float, float]:
            scale = min(1.0, Carried.EVIDENCE / max(source.kept + source.failures, 1e-9))
            return source.kept * scale, source.failures * scale

        def values(table: dict[int, Average]) -> dict[int, float]:
            return {n: avg.value for n, avg in table.items() if avg.value is not None}
        return Carried(self.full.value, self.draft.value, values(self.verify), values(self.reading),
                       {name: discounted(getattr(self, name)) for name in self.SOURCES})

    def start_from(self, carried: Carried) -> None:
        """Begin with what an earlier run with the same draft measured: no plain step is needed to
        learn f, and a source with evidence is not probed at its first chance."""
        self.full.value, self.draft.value = carried.full, carried.draft
        self.verify = {n: Average(value=v) for n, v in carried.verify.items()}
        self.reading = {m: Average(value=r) for m, r in carried.reading.items()}
        for name, (kept, failures) in carried.sources.items():
            source = getattr(self, name)
            source.kept, source.failures = kept, failures

    def plan(self, limit: int, available: int, max_context: int, match: int = 2) -> Plan:
        """(tokens copied, tokens drafted) for the next step: of `available` tokens the context
        proposes (after a match of `match` tokens) at most `max_context` are used, up to `limit`
        tokens in all, at most K drafted."""
        copies = min(available, max_context, limit)
        drafts = min(self.max_draft, limit)
        if limit < 1 or self.full.value is None:
            return 0, 0  # measure a plain step first: it costs nothing against plain decoding
        copying = self.copy_source(match)
        odds, a_d = self.copy_odds(match), self.drafts.acceptance()
        d = self.draft.value or 0.0
        v = self.verify_table(copies + drafts).__getitem__
        r = self.reading_table(copies).__getitem__
        known = plans(copies if odds is not None else 0, drafts if a_d is not None else 0, limit)
        # An unknown source's acceptance counts as 0 (in a probe it wastes the least if it fails).
        odds = odds or CopyOdds(0.0, 0.0)
        best, rate = best_plan(known, odds, a_d or 0.0, d, v, r)
        if best[0]:
            copying.interval = 1  # it pays: once it stops paying, probe it again soon
        if best[1]:
            self.drafts.interval = 1
        # A probe: one token of a source the best plan leaves out, in the cheapest plan that carries it.
        probes = []
        if not best[0] and copies and copying.due():
            probes.append((copying, [p for p in plans(1, drafts if a_d is not None else 0, limit) if p[0]]))
        if not best[1] and drafts and self.drafts.due():
            probes.append((self.drafts, [(0, 1)]))  # alone: behind copies it is seen only if they all survive
        for source, candidates in probes:
            chosen, _ = best_plan(candidates, odds, a_d or 0.0, d, v, r)
            wait = probe_wait(probe_waste(chosen, rate, odds, a_d or 0.0, d, v, r), self.full.value,
                              self.explore)
            if source.acceptance() is None or source.idle >= min(wait, self.max_probe):
                source.interval = next_interval(max(source.interval, source.idle), wait, self.max_probe)
                return chosen
        return best

    def observe_copies(self, proposal: list[int], committed: list[int], match: int = 2) -> None:
        """Score the context's proposal for a step against the tokens the full model committed in it,
        whether the step verified the copies or not.

        A copied token is a deterministic proposal, so whether the full model would have kept it is
        whether it equals the token the full model chose there (in sampling too: a one-hot proposal
        is kept with probability p(token), the probability that the sampled token equals it). So the
        context's acceptance is observed at every step for free, a source that failed once is not
        left unprobed while the text turns to copying, and a step that verified m copies and kept
        them all still shows whether the copy went on past them (else such a step is censored
        evidence, and estimates lowered early recover only m tokens a step)."""
        if not proposal or not committed:
            return
        compared = min(len(proposal), len(committed))
        matched = 0
        while matched < compared and proposal[matched] == committed[matched]:
            matched += 1
        failed = matched < compared
        first = self.copy_source(match)
        first.idle = 0  # observed: no probe needed
        if self.copying:  # every token continued the run
            self.copy_runs.observe(matched, failed)
        else:
            first.observe(min(matched, 1), not matched)
            if matched and (matched > 1 or failed):
                self.copy_runs.observe(matched - 1, failed)
        self.copying = not failed

    def observe_plain(self, seconds: float) -> None:
        self.full.add(seconds)
        self._age_sources()

    def _age_sources(self) -> None:
        """One more step since each source was last verified (a step that verifies one resets it)."""
        for name in self.SOURCES:
            getattr(self, name).idle += 1

    def observe_step(self, context: int, drafted: int, accepted: int, draft_seconds: float,
                     verify_seconds: float, reading_seconds: float | None = None) -> None:
        """A verified step of `context` copied tokens followed by `drafted` draft tokens, of which the
        full model kept the first `accepted`. `reading_seconds`: of `draft_seconds`, the draft's first
        forward, which read the copies (without it the copies' reading counts as drafting). The copies'
        acceptance is learned from `observe_copies`, which sees past the verified ones."""
        if context + drafted < 1:
            return
        self.verify.setdefault(context + drafted, Average()).add(verify_seconds)
        self._age_sources()
        if drafted:
            self.drafts.idle = 0
        if drafted and context and reading_seconds is not None:
            self.reading.setdefault(context, Average()).add(reading_seconds)
            if drafted > 1:
                self.draft.add((draft_seconds - reading_seconds) / (drafted - 1))
        elif drafted:
            self.draft.add(draft_seconds / drafted)
        if drafted:
            if accepted >= context:  # the drafts were reached: their acceptance was observed
                self.drafts.observe(accepted - context, accepted < context + drafted)
