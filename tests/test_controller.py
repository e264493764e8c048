"""The draft-length controller's decisions, from injected costs and acceptance (no clocks involved)."""

from __future__ import annotations

import pytest

import selfspec.engine.decoding as decoding
from selfspec import DraftSettings, SkipProfile, autoregressive, self_speculative, summarize
from selfspec.engine.controller import DraftLength
from tiny_models import tiny_model


def rate(a: float, k: int, draft: float, verify: float) -> float:
    """Tokens per second of a k-token draft step, summed term by term (not the closed form)."""
    return sum(a ** i for i in range(k + 1)) / (k * draft + verify)


def learned(k: int, full: float, draft: float, verify: float, accepted: int, drafted: int, steps: int) -> DraftLength:
    """A controller that has seen one plain step and `steps` identical draft steps."""
    c = DraftLength(k)
    c.observe_plain(full)
    for _ in range(steps):
        c.observe_draft(drafted, accepted, draft * drafted, verify)
    return c


def test_first_a_plain_step_then_the_full_draft_length():
    c = DraftLength(5)
    assert c.choose(10) == 0  # measures the full model first
    c.observe_plain(0.05)
    assert c.choose(10) == 5  # nothing known about the draft: try it at full length
    assert c.choose(3) == 3  # never more than the tokens left
    assert DraftLength(5).choose(0) == 0


@pytest.mark.parametrize("a_steps,draft,verify", [
    ((4, 4), 0.2, 1.0),  # every draft accepted, cheap draft: draft K
    ((3, 4), 0.3, 1.0),  # a = 3/4: somewhere in between
    ((1, 4), 0.3, 1.0),  # mostly rejected
    ((0, 4), 0.5, 1.2),  # always rejected: plain steps
])
def test_picks_the_length_with_the_highest_expected_rate(a_steps, draft, verify):
    accepted, drafted = a_steps
    c = learned(4, 1.0, draft, verify, accepted, drafted, steps=30)
    a = accepted / (accepted + (1 if accepted < drafted else 0))  # the geometric MLE, by hand
    rates = {0: 1.0, **{k: rate(a, k, draft, verify) for k in range(1, 5)}}
    best = max(rates, key=rates.get)
    assert c.choose(10) == best


def test_falls_back_to_plain_steps_on_a_bad_draft_and_probes_at_doubling_intervals():
    c = learned(4, full=1.0, draft=0.4, verify=1.1, accepted=0, drafted=4, steps=1)
    decisions = []
    for _ in range(40):
        k = c.choose(100)
        decisions.append(k)
        if k == 0:
            c.observe_plain(1.0)
        else:
            c.observe_draft(k, 0, 0.4 * k, 1.1)  # the probe is rejected too
    probes = [i for i, k in enumerate(decisions) if k]
    assert all(decisions[i] == 1 for i in probes)  # probes draft one token: cheap
    gaps = [b - a - 1 for a, b in zip([-1] + probes, probes)]  # plain steps before each probe
    assert gaps[:3] == [4, 8, 16]
    assert sum(decisions) <= 3


def test_a_probe_that_is_accepted_resumes_drafting():
    c = learned(4, full=1.0, draft=0.2, verify=1.0, accepted=0, drafted=4, steps=2)
    k = c.choose(100)
    while k == 0:
        c.observe_plain(1.0)
        k = c.choose(100)
    assert k == 1  # the probe
    for _ in range(12):  # the text became predictable: every probe and draft accepted
        if k == 0:
            c.observe_plain(1.0)
        else:
            c.observe_draft(k, k, 0.2 * k, 1.0)
        k = c.choose(100)
    assert k == 4


def test_plain_steps_are_recorded_and_lossless(monkeypatch):
    model = tiny_model("llama")
    expected = [t for r in autoregressive(model, [5, 6, 7], 20) for t in r.token_ids]
    monkeypatch.setattr(DraftLength, "plan", lambda self, limit, available, max_context: (0, 0))  # never drafts
    settings = DraftSettings(max_draft=4, controller=True)
    records = list(self_speculative(model, [5, 6, 7], SkipProfile(4, attn=[0]), 20, settings=settings))
    assert [t for r in records for t in r.token_ids] == expected
    assert [r.kind for r in records] == ["prefill"] + ["decode"] * 19
    summary = summarize(records)
    assert summary.plain_steps == 19 and summary.verifications == 0


def test_bad_controller_settings_are_refused():
    with pytest.raises(ValueError, match="max_draft must be a positive integer"):
        DraftLength(0)
