"""How many tokens to draft next, from the run's own measured costs and acceptance.

The cost model of draft-and-verify: a step that drafts k tokens at `d` seconds each and verifies
them in `v_k` seconds commits E(a, k) = 1 + a + ... + a^k tokens on average, where a is the chance
that a draft token survives; a plain step commits one token in `f` seconds. So the expected rate is
E(a, k) / (k*d + v_k) tokens per second for k >= 1, and 1/f for k = 0. `DraftLength` keeps running
estimates of d, v_k, f and a from the steps the decoder has already taken and picks the k with the
highest rate: 0 (a plain step with the full model) whenever drafting does not pay, which is what
keeps self-speculation from ever being much slower than plain decoding. While it stays plain, it
probes with a one-token draft now and then (at doubling intervals), so a draft that starts to pay
(the text became predictable) is noticed again.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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


@dataclass
class Average:
    """Exponentially weighted mean; None until the first sample."""

    weight: float = 0.3  # of the newest sample
    value: float | None = None

    def add(self, x: float) -> None:
        self.value = x if self.value is None else (1 - self.weight) * self.value + self.weight * x


@dataclass
class DraftLength:
    max_draft: int  # K: the most tokens one step drafts
    first_probe: int = 4  # plain steps before drafting is tried again; doubles while it keeps not paying
    max_probe: int = 64
    memory: float = 0.9  # per observed step, how much of the acceptance evidence is kept
    full: Average = field(default_factory=Average)  # seconds of a plain (one-token) step
    draft: Average = field(default_factory=Average)  # seconds per drafted token
    verify: dict[int, Average] = field(default_factory=dict)  # drafted count -> seconds of its verification
    accepted: float = 0.0  # decayed counts for the draft's acceptance estimate (see acceptance())
    rejected: float = 0.0
    context_accepted: float = 0.0  # the same for tokens copied from the context (engine/context.py)
    context_rejected: float = 0.0
    plain_run: int = 0  # plain steps since the last draft
    probe_interval: int = 0  # plain steps before the next probe

    def __post_init__(self) -> None:
        if not isinstance(self.max_draft, int) or self.max_draft < 1:
            raise ValueError(f"max_draft must be a positive integer, got {self.max_draft!r}")
        self.probe_interval = self.probe_interval or self.first_probe

    def acceptance(self) -> float | None:
        """Per-token acceptance, maximum likelihood under the cost model: a step keeps a geometric
        number of its drafts, so a = accepted / (accepted + steps that rejected one)."""
        seen = self.accepted + self.rejected
        return self.accepted / seen if seen > 0 else None

    def context_acceptance(self) -> float | None:
        """The same estimate for tokens copied from the context."""
        seen = self.context_accepted + self.context_rejected
        return self.context_accepted / seen if seen > 0 else None

    def verify_seconds(self, k: int) -> float | None:
        """Measured verification time for k drafts, else that of the nearest k measured."""
        known = [n for n, avg in self.verify.items() if avg.value is not None]
        if not known:
            return None
        return self.verify[min(known, key=lambda n: (abs(n - k), -n))].value

    def rate(self, k: int) -> float | None:
        """Expected tokens per second of a step drafting k tokens (k = 0: a plain step)."""
        if k == 0:
            return 1 / self.full.value if self.full.value else None
        a, v = self.acceptance(), self.verify_seconds(k)
        if a is None or v is None or self.draft.value is None:
            return None
        return expected_tokens(a, k) / (k * self.draft.value + v)

    def choose(self, limit: int) -> int:
        """Tokens to draft in the next step (0..min(K, limit)); a probe doubles the next interval."""
        limit = min(self.max_draft, limit)
        if limit < 1:
            return 0
        if self.full.value is None:
            return 0  # measure one plain step first: it costs nothing against plain decoding
        if self.acceptance() is None or self.draft.value is None:
            return limit  # nothing known about the draft yet: try it
        rates = {k: self.rate(k) for k in range(limit + 1)}
        best = max(rates, key=lambda k: rates[k])
        if best > 0:
            self.probe_interval = self.first_probe
            return best
        if self.plain_run >= self.probe_interval:
            self.probe_interval = min(2 * self.probe_interval, self.max_probe)
            return 1  # a cheap probe: one draft token costs little and refreshes the acceptance
        return 0

    def observe_plain(self, seconds: float) -> None:
        self.full.add(seconds)
        self.plain_run += 1

    def observe_draft(self, drafted: int, accepted: int, draft_seconds: float, verify_seconds: float) -> None:
        self.observe_step(0, drafted, accepted, draft_seconds, verify_seconds)

    def observe_step(self, context: int, drafted: int, accepted: int, draft_seconds: float,
                     verify_seconds: float) -> None:
        """A verified step of `context` copied tokens followed by `drafted` draft tokens, of which the
        full model kept the first `accepted`."""
        if context + drafted < 1:
            return
        self.plain_run = 0
        self.verify.setdefault(context + drafted, Average()).add(verify_seconds)
        m = self.memory
        if context:
            self.context_accepted = m * self.context_accepted + min(accepted, context)
            self.context_rejected = m * self.context_rejected + (1 if accepted < context else 0)
        if drafted:
            self.draft.add(draft_seconds / drafted)
            if accepted >= context:  # the drafts were reached: their acceptance was observed
                self.accepted = m * self.accepted + accepted - context
                self.rejected = m * self.rejected + (1 if accepted < context + drafted else 0)

    # --- steps that may copy from the context -------------------------------------------------------

    def plan(self, limit: int, available: int, max_context: int) -> tuple[int, int]:
        """(context tokens, draft tokens) for the next step: `available` tokens the context proposes
        (at most `max_context` of them used), up to `limit` tokens in all, of which at most K drafted.

        Each candidate's expected rate is (1 + sum_i a_c^i + a_c^m sum_j a^j) / (j d + v_{m+j}): copied
        tokens cost no forward pass, only verification width. Unknown estimates are learned first.
        """
        usable = min(available, max_context, limit)
        if usable < 1:
            return 0, self.choose(limit)
        if self.full.value is None:
            return 0, 0
        a_c = self.context_acceptance()
        if a_c is None or self.verify_seconds(usable) is None:
            return usable, 0  # learn what copying earns: it costs one verification
        candidates = {(0, k): self.rate(k) for k in range(min(self.max_draft, limit) + 1)}
        a, d = self.acceptance(), self.draft.value
        for n in range(1, usable + 1):
            copied = sum(a_c ** i for i in range(1, n + 1))
            for k in range(0, min(self.max_draft, limit - n) + 1):
                if k and (a is None or d is None):
                    break
                drafted = a_c ** n * sum(a ** i for i in range(1, k + 1)) if k else 0.0
                candidates[(n, k)] = (1 + copied + drafted) / (k * (d or 0.0) + self.verify_seconds(n + k))
        known = {plan: rate for plan, rate in candidates.items() if rate is not None}
        best = max(known, key=known.get)
        if best != (0, 0):
            self.probe_interval = self.first_probe
            return best
        if self.plain_run >= self.probe_interval:
            self.probe_interval = min(2 * self.probe_interval, self.max_probe)
            return (1, 0) if a_c >= (a or 0.0) else (0, 1)  # a cheap probe of the better-earning source
        return 0, 0
