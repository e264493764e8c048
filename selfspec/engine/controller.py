"""What to verify next, from the run's own measured costs and acceptance.

The cost model of draft-and-verify: a step that verifies n proposed tokens, each surviving with
chance a_i given the previous ones survived, commits 1 + a_1 + a_1 a_2 + ... tokens on average
(the full model's own token comes with every verification). Two sources propose: tokens copied from
the context (engine/context.py), free to propose, and the model's draft, d seconds a token. Copies
come in runs: the longer the text has matched the copied occurrence, the likelier it goes on matching
(a RAG answer copies its passage for dozens of tokens; in maths a match of 2 or 3 tokens is mostly
coincidence and ends at once). So the i-th copy is kept with a chance c_i learned per length of the
match it extends (`COPY_RUNS`), and the draft, kept with chance a a token, continues after the copies:
a plan (m copies, k drafts) commits
    E(m, k) = 1 + c_1 + c_1 c_2 + ... + c_1...c_m + c_1...c_m (a + ... + a^k)
tokens in r(m) + (k - 1) d + v(m + k) seconds, where v(n) is the measured verification of n proposed
tokens, v(0) = f is a plain one-token step, and r(m) is the draft's first forward, which must read the
m copies before drafting after them (r(0) = d; a wide low-bit forward can cost several drafted tokens,
which keeps the draft off the end of long copies). `best_plan` takes the plan with the most tokens per
second, so a source is used only when the tokens it is expected to add pay for the width and draft
time it adds, and (0, 0), a plain step, whenever nothing pays: that is what keeps self-speculation
from being much slower than plain decoding.

Copies fail mostly at their first token (a summary leaves the sentence it was quoting), and the draft
knows where: its first token is the full model's nearly always, so a copy it would not choose is nearly
always rejected. A vetted plan (m, k) therefore drafts one token first: if it is the first copy, the m
copies are verified behind it, else the draft goes on alone to k tokens. That costs one drafted token
where the copies pass and nothing where they fail (the draft would have drafted that token anyway), in
place of a wide verification that keeps nothing (`plan_tokens`, `vetting_agreement`).

Copies are scored at every step for free (`observe_copies`). The draft, when the best plan leaves it
out, is probed now and then, so a draft that starts to pay (the text became predictable) is noticed:
one drafted token, alone (behind copies it would be observed only if all of them survived, and its
drafting time would be mixed with reading them). Each probe's expected loss against the best plan is
known from the same numbers, and the next probe waits long enough that probes waste at most `explore`
of the time spent meanwhile, and, while the draft stays out of the best plan (a probe it keeps but that
leaves it not paying changes nothing), twice as long as the last time. A
draft nothing is known about yet is probed at its first chance, with that one token: a short first
draft, never K before acceptance is known.

Acceptance is estimated from few steps, where a bare maximum-likelihood estimate swings to 1 or 0 on a
single token (one matched copied token made a 16-token copy look certain). Each source's estimate
therefore starts from a few pseudo-tokens of prior (`Source.prior_kept`, `prior_failures`) that the
run's own evidence soon outweighs. A run starts from what the last run with the same draft measured
(`Carried`), when there was one. Costs are measured from few steps too: a width's verification cost is
the median of its recent samples, and until it has a few it is priced at most at the line through the
other widths (`steadied`), so that one stalled measurement cannot price a width out for good; and the costs
are fitted never to fall with width (`nondecreasing`), so that noise between near-equal widths does not pick
the draft length. Costs measured
only while their source is used (the draft's, a plain step's) are the lowest of their recent samples, and a
plain step is priced at most as the cheapest verification; the probes' schedule runs on from run to run.
"""

from __future__ import annotations

import bisect
import itertools
import math
import statistics
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Sequence


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


class CopyOdds:
    """How likely a step's copied tokens are kept: `kept[i]`, the chance of the (i+1)-th given the ones
    before it were kept. One acceptance for all undervalues long copies: on copy-heavy text nearly
    every failure falls on a copy's first tokens."""

    def __init__(self, kept: Sequence[float]):
        self.kept = tuple(kept)
        self._reach = [1.0]
        for a in self.kept:
            self._reach.append(self._reach[-1] * a)
        self._tokens = list(itertools.accumulate(self._reach))

    def tokens(self, copies: int) -> float:
        """Expected tokens a step verifying `copies` copies (and nothing else) commits."""
        return self._tokens[copies]

    def reach(self, copies: int) -> float:
        """The chance that all `copies` copies are kept."""
        return self._reach[copies]


# Copied tokens are learned apart by the length of the match they extend: 1, 2-3, 4-7, 8-15, 16 or more
# tokens (the copy's n-gram match plus what the text has copied since), each with its prior acceptance.
COPY_RUNS = (1, 2, 4, 8, 16)
TRUSTED_SAMPLES = 3  # a width's verification cost is its own once measured this often (`steadied`)
COPY_PRIORS = (0.25, 0.5, 0.7, 0.8, 0.9)


def copy_run(matched: int) -> int:
    """Which of `COPY_RUNS` a copied token extending a match of `matched` tokens falls in."""
    return bisect.bisect_right(COPY_RUNS, max(matched, 1)) - 1


class Plan(NamedTuple):
    """What a step verifies: `copies` tokens copied from the context, then `drafts` tokens the model
    drafts after them. Or, `vetted`, the draft's first token chooses between the two: the copies alone
    if it is their first token, else `drafts` drafted tokens alone (that token first)."""

    copies: int
    drafts: int
    vetted: bool = False


def vetting_agreement(copy: CopyOdds, draft_acceptance: float) -> float:
    """The chance a vetted plan verifies its copies: the draft's first token is the first copy's. Taken
    as the chance that both are the full model's token: a wrong copy that the draft would choose too is
    rare, since the draft's choices are mostly the full model's."""
    return draft_acceptance * copy.reach(1)


def plan_tokens(copy: CopyOdds, copies: int, draft_acceptance: float, drafts: int, vetted: bool = False) -> float:
    """E(m, k): expected tokens committed by a step verifying `copies` copied tokens, then `drafts` drafted.

    Vetted, by the cases of the draft's first token (a) and the first copy (c_1) being the full model's:
    both (a c_1): the copies are verified, their first kept, 1 + (E_c(m) - 1) / c_1 tokens; only the copy
    (c_1 (1 - a)): the drafts are verified and their first rejected, 1 token; not the copy (1 - c_1): the
    drafts, E_d(k)."""
    a = draft_acceptance
    if vetted:
        first = copy.reach(1)
        return a * (first + copy.tokens(copies) - 1) + first * (1 - a) + (1 - first) * expected_tokens(a, drafts)
    return copy.tokens(copies) + copy.reach(copies) * (expected_tokens(a, drafts) - 1)


def drafting_seconds(copies: int, drafts: int, draft_seconds: float,
                     reading_seconds: Callable[[int], float] | None = None) -> float:
    """The draft's time in a plan: r(m) + (k - 1) d, nothing when k = 0. Without `reading_seconds` (r),
    reading the copies is taken as free: k d."""
    if not drafts:
        return 0.0
    first = reading_seconds(copies) if copies and reading_seconds is not None else draft_seconds
    return first + (drafts - 1) * draft_seconds


def plan_seconds(copies: int, drafts: int, draft_seconds: float, verify_seconds: Callable[[int], float],
                 reading_seconds: Callable[[int], float] | None = None, agreement: float | None = None) -> float:
    """Drafting plus v(m + k); v(0) is a plain step. With the `agreement` of a vetted plan: one drafted
    token and v(m) when the draft agrees with the copies, k drafted tokens and v(k) when not."""
    if agreement is not None:
        return (agreement * (draft_seconds + verify_seconds(copies))
                + (1 - agreement) * (drafts * draft_seconds + verify_seconds(drafts)))
    return drafting_seconds(copies, drafts, draft_seconds, reading_seconds) + verify_seconds(copies + drafts)


def guessed_reading(draft_seconds: float, verify_seconds: float, plain_seconds: float | None) -> float:
    """r(m) before one is measured: a drafted token scaled as the full model's forward scales with width, v(m) / f."""
    return draft_seconds * verify_seconds / plain_seconds if plain_seconds else draft_seconds


def plans(copies: int, drafts: int, limit: int) -> list[Plan]:
    """Every plan of at most `copies` copied and `drafts` drafted tokens, `limit` in all, narrowest first."""
    return sorted((Plan(m, k) for m in range(min(copies, limit) + 1) for k in range(min(drafts, limit - m) + 1)),
                  key=sum)


def vetted_plans(copies: int, drafts: int, limit: int) -> list[Plan]:
    """1..`copies` copies vetted by the draft's first token, each with `drafts` drafted tokens for when
    it disagrees."""
    if not drafts:
        return []
    return [Plan(m, min(drafts, limit), vetted=True) for m in range(1, min(copies, limit) + 1)]


def plan_expectation(plan: Plan, copy: CopyOdds, draft_acceptance: float, draft_seconds: float,
                     verify_seconds: Callable[[int], float],
                     reading_seconds: Callable[[int], float] | None = None) -> tuple[float, float]:
    """(expected tokens, expected seconds) of a step of `plan`."""
    agreement = vetting_agreement(copy, draft_acceptance) if plan.vetted else None
    seconds = plan_seconds(plan.copies, plan.drafts, draft_seconds, verify_seconds, reading_seconds, agreement)
    return plan_tokens(copy, plan.copies, draft_acceptance, plan.drafts, plan.vetted), seconds


def best_plan(candidates: list[Plan], copy: CopyOdds, draft_acceptance: float, draft_seconds: float,
              verify_seconds: Callable[[int], float],
              reading_seconds: Callable[[int], float] | None = None) -> tuple[Plan, float]:
    """The candidate with the most expected tokens per second, and that rate."""
    best, best_rate = None, -1.0
    for plan in candidates:  # in order of width: a tie keeps the narrower plan
        tokens, seconds = plan_expectation(plan, copy, draft_acceptance, draft_seconds, verify_seconds, reading_seconds)
        rate = tokens / seconds
        if rate > best_rate:
            best, best_rate = plan, rate
    return best, best_rate


def probe_waste(plan: Plan, best_rate: float, copy: CopyOdds, draft_acceptance: float,
                draft_seconds: float, verify_seconds: Callable[[int], float],
                reading_seconds: Callable[[int], float] | None = None) -> float:
    """Seconds a step of `plan` is expected to lose against the best plan: its time less the time the
    best plan takes to commit as many tokens."""
    tokens, seconds = plan_expectation(plan, copy, draft_acceptance, draft_seconds, verify_seconds, reading_seconds)
    return max(0.0, seconds - tokens / best_rate)


def probe_wait(waste: float, plain_seconds: float, explore: float) -> int:
    """Steps a probe wasting `waste` seconds must be apart from the next so that probes cost at most
    `explore` of the plain-step time spent meanwhile."""
    return max(1, math.ceil(waste / (explore * plain_seconds)))


def next_interval(interval: int, wait: int, longest: int) -> int:
    """Steps before the next probe of a source that still does not pay: twice the last wait, at least `wait`."""
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


def fitted_line(points: list[tuple[int, float, int]]) -> Callable[[int], float] | None:
    """The straight line through (width, cost, samples) points by least squares weighted by samples, never
    falling (a falling fit is flat, at the weighted mean); None without two widths."""
    total = sum(w for _, _, w in points)
    if len({n for n, _, w in points if w > 0}) < 2:
        return None
    mean_n = sum(w * n for n, _, w in points) / total
    mean_x = sum(w * x for _, x, w in points) / total
    spread = sum(w * (n - mean_n) ** 2 for n, _, w in points)
    slope = max(0.0, sum(w * (n - mean_n) * (x - mean_x) for n, x, w in points) / spread)
    return lambda n: mean_x + slope * (n - mean_n)


def steadied(points: list[tuple[int, float, int]], trusted: int) -> list[tuple[int, float]]:
    """(width, cost) from (width, cost, samples): a width measured fewer than `trusted` times is priced at
    the lower of its cost and the line through the other widths (`fitted_line`), so that it is verified
    again until its own samples can be trusted. On its own measurements, one slow sample at a width (the
    host's noise) priced that width out for good: a width priced out is never verified again, so its cost
    was never corrected, and runs hand their costs on to the next (`Carried`)."""
    steady = []
    for i, (n, x, w) in enumerate(points):
        line = None if w >= trusted else fitted_line(points[:i] + points[i + 1:])
        steady.append((n, x if line is None else min(x, line(n))))
    return steady


def nondecreasing(points: list[tuple[int, float, int]]) -> list[tuple[int, float]]:
    """(width, cost) from (width, cost, samples) in order of width, made never falling with width by pooling
    neighbours that fall into their sample-weighted mean (pool-adjacent-violators, the least-squares
    nondecreasing fit). Verifying one position more never costs less, but widths a few positions apart
    cost within the host's noise of each other: on their own medians a width that happened to measure
    cheap drew every plan to it, and two runs of one draft settled on different lengths."""
    pools: list[list] = []  # [weighted sum, weight, widths]
    for n, x, w in points:
        pools.append([x * max(w, 1), max(w, 1), [n]])
        while len(pools) > 1 and pools[-2][0] / pools[-2][1] > pools[-1][0] / pools[-1][1]:
            total, weight, widths = pools.pop()
            pools[-1][0] += total
            pools[-1][1] += weight
            pools[-1][2] += widths
    return [(n, total / weight) for total, weight, widths in pools for n in widths]


@dataclass
class RecentMedian:
    """The median of the last `keep` samples: a stalled measurement among them moves it little."""

    keep: int = 5
    samples: list[float] = field(default_factory=list)

    def add(self, x: float) -> None:
        self.samples = (self.samples + [x])[-self.keep:]

    @property
    def value(self) -> float | None:
        return self.summary(self.samples) if self.samples else None

    summary = staticmethod(statistics.median)


@dataclass
class RecentLow(RecentMedian):
    """The lowest of the last `keep` samples. For the costs of a source that is measured only while it is
    used (the draft, its reading of copies): a host's noise only ever adds time, and one stalled sample
    that priced the source out would be corrected only by rare probes, each moving an average a little
    (one stall in a bench's warm-up kept a good draft out of every run after it)."""

    summary = staticmethod(min)


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

    def estimate(self) -> float:
        """Per-token acceptance: a step keeps a geometric number of a source's tokens, so the
        maximum-likelihood estimate is kept / (kept + steps that rejected one); the prior's pseudo-counts
        are added to both (with nothing observed, it is the prior's)."""
        return (self.kept + self.prior_kept) / (self.kept + self.failures + self.prior_kept + self.prior_failures)

    def acceptance(self) -> float | None:
        """`estimate()` once anything was observed, else None."""
        return self.estimate() if self.kept + self.failures > 0 else None

    def observe(self, kept: int, failed: bool) -> None:
        self.kept = self.memory * self.kept + kept
        self.failures = self.memory * self.failures + failed

    def due(self) -> bool:
        return self.acceptance() is None or self.idle >= self.interval


@dataclass(frozen=True)
class Carried:
    """What a run leaves the next run with the same draft: the costs it measured (a machine's costs barely
    change between prompts) and the draft's evidence, discounted to at most `EVIDENCE` tokens (the
    prompts differ: it is a prior, which the new run's own steps soon outweigh). Not the copies' odds:
    those belong to the text, not to the draft (a retrieval answer's copies run on, a maths answer's rarely),
    and carried from one into the other they made the next run bet steps on copies that failed."""

    full: float | None
    draft: float | None
    verify: dict[int, float]
    reading: dict[int, float]
    sources: dict[str, tuple[float, float]]  # source -> (kept, failures)
    verify_samples: dict[int, int] = field(default_factory=dict)  # samples behind each verify cost (<= TRUSTED_SAMPLES)
    # The draft's probe schedule (steps since its tokens were last verified, steps between probes): runs
    # shorter than a probe's wait would otherwise never probe a draft priced out, and it would stay out.
    probe: tuple[int, int] = (0, 1)

    EVIDENCE = 3.0


@dataclass
class DraftLength:
    max_draft: int  # K: the most tokens one step drafts
    explore: float = 0.03  # the most of the run's time probes may waste
    max_probe: int = 64  # the longest a source waits for its next probe
    full: RecentLow = field(default_factory=RecentLow)  # seconds of a plain (one-token) step (`plain_seconds`)
    draft: RecentLow = field(default_factory=RecentLow)  # seconds per drafted token
    verify: dict[int, RecentMedian] = field(default_factory=dict)  # tokens verified -> seconds of the verification
    reading: dict[int, RecentLow] = field(default_factory=dict)  # copies read -> seconds of the draft's first forward
    # Copied tokens, one source per length of the match they extend (`COPY_RUNS`); a light prior (one
    # pseudo-token) that a copy's own tokens soon outweigh.
    copies: tuple[Source, ...] = field(default_factory=lambda: tuple(
        Source(prior_kept=p, prior_failures=1 - p) for p in COPY_PRIORS))
    # The model's own draft: a draft worth building keeps most of its tokens (3 in 4 at first).
    drafts: Source = field(default_factory=lambda: Source(prior_kept=1.5, prior_failures=0.5))
    # The verification costs' points as last steadied, and what they were steadied from: recomputed only
    # after a new measurement (the controller plans every step)
    _measured: tuple = field(default=(None, None), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.max_draft, int) or self.max_draft < 1:
            raise ValueError(f"max_draft must be a positive integer, got {self.max_draft!r}")

    def acceptance(self) -> float | None:
        return self.drafts.acceptance()

    def copy_odds(self, match: int, copies: int) -> CopyOdds:
        """The odds of `copies` copied tokens extending a context match of `match` tokens."""
        return CopyOdds([self.copies[copy_run(match + i)].estimate() for i in range(copies)])

    def sources(self) -> dict[str, Source]:
        """Every source by name: the draft, and the copies by the length of the match they extend."""
        return {"drafts": self.drafts} | {f"copies after {n}": s for n, s in zip(COPY_RUNS, self.copies)}

    def verify_seconds(self, n: int) -> float:
        """Seconds to verify n proposed tokens (n = 0: a plain step)."""
        return self.verify_table(n)[n]

    def plain_seconds(self) -> float | None:
        """A plain step's cost: the lowest of its recent samples, and never more than the cheapest
        verification measured (one position more cannot make a forward cheaper). A plain step priced too
        high is not measured again while drafting looks better, so one stalled plain step kept a draft that
        never paid drafting, at half the speed of plain decoding."""
        verifications = [m.value for m in self.verify.values() if m.samples]
        return min([self.full.value] + verifications) if self.full.value is not None else None

    def verify_table(self, widest: int) -> list[float]:
        """Seconds to verify 0..widest proposed tokens (0: a plain step), from what this run measured."""
        points = [(0, self.plain_seconds(), TRUSTED_SAMPLES)] + [
            (n, m.value, len(m.samples)) for n, m in self.verify.items() if m.samples]
        if self._measured[0] != points:
            steady = steadied(points, TRUSTED_SAMPLES)
            self._measured = (points, nondecreasing(sorted((n, x, w) for (n, x), (_, _, w) in zip(steady, points))))
        return verify_costs(self._measured[1], widest)

    def reading_table(self, widest: int) -> list[float]:
        """r(0..widest): seconds of a draft forward that reads m copied tokens and drafts one (r(0) = d).
        Measured where it was, else interpolated; before anything is measured, d scaled as the full
        model's verification scales with width (v(m) / f)."""
        d = self.draft.value or 0.0
        points = [(m, avg.value) for m, avg in self.reading.items() if avg.value is not None]
        if points:
            return verify_costs([(0, d)] + points, widest)
        full = self.plain_seconds()
        return [guessed_reading(d, v, full) for v in self.verify_table(widest)]

    def carried(self) -> Carried:
        """This run's costs and discounted evidence, for the next run with the same draft."""
        def discounted(source: Source) -> tuple[float, float]:
            scale = min(1.0, Carried.EVIDENCE / max(source.kept + source.failures, 1e-9))
            return source.kept * scale, source.failures * scale

        def values(table: dict) -> dict[int, float]:
            return {n: avg.value for n, avg in table.items() if avg.value is not None}
        return Carried(self.plain_seconds(), self.draft.value, values(self.verify), values(self.reading),
                       {"drafts": discounted(self.drafts)},
                       {n: min(len(m.samples), TRUSTED_SAMPLES) for n, m in self.verify.items() if m.samples},
                       (self.drafts.idle, self.drafts.interval))

    def start_from(self, carried: Carried) -> None:
        """Begin with what an earlier run with the same draft measured: no plain step is needed to
        learn f, and a draft with evidence is not probed at its first chance."""
        self.full = RecentLow(samples=[] if carried.full is None else [carried.full])
        self.draft = RecentLow(samples=[] if carried.draft is None else [carried.draft])
        self.verify = {n: RecentMedian(samples=[v] * carried.verify_samples.get(n, 1)) for n, v in carried.verify.items()}
        self.reading = {m: RecentLow(samples=[r]) for m, r in carried.reading.items()}
        sources = self.sources()
        for name, (kept, failures) in carried.sources.items():
            sources[name].kept, sources[name].failures = kept, failures
        self.drafts.idle, self.drafts.interval = carried.probe

    def plan(self, limit: int, available: int, max_context: int, match: int = 2) -> Plan:
        """What the next step verifies: of `available` tokens the context proposes (after a match of
        `match` tokens) at most `max_context` are used, up to `limit` tokens in all, at most K drafted."""
        copies = min(available, max_context, limit)
        drafts = min(self.max_draft, limit)
        if limit < 1 or self.plain_seconds() is None:
            return Plan(0, 0)  # measure a plain step first: it costs nothing against plain decoding
        odds, a_d = self.copy_odds(match, copies), self.drafts.acceptance()
        d = self.draft.value or 0.0
        v = self.verify_table(copies + drafts).__getitem__
        r = self.reading_table(copies).__getitem__
        candidates = plans(copies, drafts if a_d is not None else 0, limit)
        best, rate = best_plan([p for p in candidates if not p.copies], odds, a_d or 0.0, d, v, r)
        if copies:
            copying = [p for p in candidates if p.copies]
            if a_d is not None and drafts:  # vetted copies fall back on the drafts the draft alone would verify
                copying += vetted_plans(copies, best.drafts, limit)
            copying_best, copying_rate = best_plan(copying, odds, a_d or 0.0, d, v, r)
            if copying_rate > rate:
                best, rate = copying_best, copying_rate
        if best.drafts:
            self.drafts.interval = 1  # it pays: once it stops paying, probe it again soon
        elif drafts and self.drafts.due():
            # A probe: one drafted token, alone (behind copies it is seen only if they all survive).
            # An unknown acceptance counts as 0: the probe wastes the least if the draft fails.
            waste = probe_waste(Plan(0, 1), rate, odds, a_d or 0.0, d, v, r)
            wait = probe_wait(waste, self.plain_seconds(), self.explore)
            if a_d is None or self.drafts.idle >= min(wait, self.max_probe):
                self.drafts.interval = next_interval(max(self.drafts.interval, self.drafts.idle), wait, self.max_probe)
                return Plan(0, 1)
        return best

    def observe_copies(self, proposal: list[int], committed: list[int], match: int = 2) -> None:
        """Score the context's proposal for a step against the tokens the full model committed in it,
        whether the step verified the copies or not.

        A copied token is a deterministic proposal, so whether the full model would have kept it is
        whether it equals the token the full model chose there (in sampling too: a one-hot proposal
        is kept with probability p(token), the probability that the sampled token equals it). So the
        context's acceptance is observed at every step for free (copies need no probes), and a step
        that verified m copies and kept them all still shows whether the copy went on past them.
        `match`: the length of the context match the proposal extends; the i-th copied token is
        evidence for copies extending a match of `match + i`."""
        compared = min(len(proposal), len(committed))
        matched = 0
        while matched < compared and proposal[matched] == committed[matched]:
            matched += 1
        evidence: dict[int, list] = {}  # run -> [tokens kept, whether one was rejected]
        for i in range(min(matched + 1, compared)):  # the kept copies, then the rejected one if any
            counts = evidence.setdefault(copy_run(match + i), [0, False])
            if i < matched:
                counts[0] += 1
            else:
                counts[1] = True
        for run, (kept, failed) in evidence.items():
            self.copies[run].observe(kept, failed)

    def observe_plain(self, seconds: float) -> None:
        self.full.add(seconds)
        self.drafts.idle += 1  # one more step since a drafted token was verified

    def observe_step(self, context: int, drafted: int, accepted: int, draft_seconds: float,
                     verify_seconds: float, reading_seconds: float | None = None) -> None:
        """A verified step of `context` copied tokens followed by `drafted` draft tokens, of which the
        full model kept the first `accepted`. `reading_seconds`: of `draft_seconds`, the draft's first
        forward, which read the copies (without it the copies' reading counts as drafting). The copies'
        acceptance is learned from `observe_copies`, which sees past the verified ones."""
        if context + drafted < 1:
            return
        self.verify.setdefault(context + drafted, RecentMedian()).add(verify_seconds)
        self.drafts.idle = 0 if drafted else self.drafts.idle + 1
        if drafted and context and reading_seconds is not None:
            self.reading.setdefault(context, RecentLow()).add(reading_seconds)
            if drafted > 1:
                self.draft.add((draft_seconds - reading_seconds) / (drafted - 1))
        elif drafted:
            self.draft.add(draft_seconds / drafted)
        if drafted:
            if accepted >= context:  # the drafts were reached: their acceptance was observed
                self.drafts.observe(accepted - context, accepted < context + drafted)
