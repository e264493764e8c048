"""The summary's "why": the race's costs read from one clock, and the verdict from the cost model."""

import pytest

from selfspec.bench.costmodel import expected_tokens
from selfspec.engine.divergence import Divergence
from selfspec.engine.records import StepRecord
from selfspec.ui.explain import race_costs, verdict
from selfspec.ui.race import Lane, Race
from selfspec.ui.render import summary_line


def race_with(full_s, draft_s, verify_s, race_overhead_s, drafted=4, accepted=2, steps=3):
    """A race whose decoder clocks say draft_s/verify_s per step, while the race's clock also sees overhead.

    Both lanes pay the same overhead per step on the race's clock: that is what one clock means.
    """
    ar, spec = Lane("autoregressive"), Lane("self-speculative")
    ar.add(StepRecord(0, "prefill", (1,), 0, 0, 0.0, 0.5, 0.5), 0.5)
    spec.add(StepRecord(0, "prefill", (1,), 0, 0, 0.0, 0.5, 0.5), 0.5)
    for i in range(1, 7):
        ar.add(StepRecord(i, "decode", (2,), 0, 0, 0.0, full_s, 0.0), full_s + race_overhead_s)
    for i in range(1, steps + 1):
        tokens = tuple(range(accepted + 1))
        spec.add(StepRecord(i, "speculate", tokens, drafted, accepted, draft_s, verify_s, 0.0),
                 draft_s + verify_s + race_overhead_s)
    return Race(ar, spec)


def test_costs_are_read_from_the_race_clock_on_both_sides():
    costs = race_costs(race_with(full_s=0.040, draft_s=0.080, verify_s=0.040, race_overhead_s=0.010))
    # Race clock: a full token 50 ms; a speculative step 130 ms, split 2:1 as the decoder recorded it.
    assert costs.full_ms == pytest.approx(50.0)
    assert costs.draft_ms == pytest.approx(130 * 2 / 3 / 4)
    assert costs.verify_ms == pytest.approx(130 / 3)
    assert costs.ms_per_token == pytest.approx(130 / 3)  # 3 tokens committed per step
    assert costs.c == pytest.approx(130 * 2 / 3 / 4 / 50) and costs.v == pytest.approx(130 / 3 / 50)


def test_the_verdict_is_the_cost_model_bound_with_its_limiting_cause():
    slow = race_costs(race_with(full_s=0.040, draft_s=0.140, verify_s=0.070, race_overhead_s=0.0, accepted=1))
    a = slow.acceptance  # 1 of 4 kept, every step a rejection: 1 / (1 + 1)
    assert a == pytest.approx(0.5)
    expected = expected_tokens(a, 4) / (4 * 0.875 + 1.75)
    assert slow.bound == pytest.approx(expected)
    text = verdict(slow)
    assert text.startswith(f"slower is expected on this device, at most {expected:.2f}×")
    assert "a draft token costs 88% of a full-model token" in text and "costs 1.75 full-model tokens" in text
    assert "agrees with the full model on only 50%" in text

    fast = race_costs(race_with(full_s=0.040, draft_s=0.040, verify_s=0.044, race_overhead_s=0.0, accepted=4))
    assert fast.bound > 1 and verdict(fast).startswith(f"this device allows up to {fast.bound:.2f}×")
    assert "drafts are cheap" in verdict(fast)


def test_no_costs_before_both_lanes_have_decoded():
    race = Race(Lane("autoregressive"), Lane("self-speculative"))
    assert race_costs(race) is None
    assert "*Why:*" not in summary_line(race, greedy=True, running=True)


def test_the_summary_explains_a_difference_and_gives_the_why():
    race = race_with(full_s=0.040, draft_s=0.080, verify_s=0.040, race_overhead_s=0.010)
    race.speculative.records[-1] = StepRecord(3, "speculate", (0, 1, 9), 4, 2, 0.08, 0.04, 0.0)  # differs at the end
    divergence = Divergence(9, (2, 9), (2, 9), 0.01, "bfloat16", near_tie=True)
    line = summary_line(race, greedy=True, running=False, divergence=divergence)
    assert "outputs differ from generated token 10 on" in line and "near-tie" in line
    assert "*Why:* a full-model token takes 50 ms." in line and "43 ms per token" in line
    assert "Slower is expected on this device" in line or "This device allows" in line


def test_copied_tokens_are_told_apart_from_drafted_ones():
    # Three steps each verify 4 copied and 2 drafted tokens; drafting took 30 ms of a 70 ms step (race clock),
    # so a drafted token cost 15 ms and a copy nothing.
    ar, spec = Lane("autoregressive"), Lane("self-speculative")
    ar.add(StepRecord(0, "prefill", (1,), 0, 0, 0.0, 0.5, 0.5), 0.5)
    spec.add(StepRecord(0, "prefill", (1,), 0, 0, 0.0, 0.5, 0.5), 0.5)
    for i in range(1, 5):
        ar.add(StepRecord(i, "decode", (2,), 0, 0, 0.0, 0.05, 0.0), 0.05)
    for i in range(1, 4):
        spec.add(StepRecord(i, "speculate", tuple(range(6)), 6, 5, 0.030, 0.040, 0.0, copied=4), 0.070)
    costs = race_costs(Race(ar, spec))
    assert costs.copied == 12 and costs.drafted == 6 and costs.draft_token_ms == pytest.approx(15.0)
    line = summary_line(Race(ar, spec), greedy=True, running=False)
    assert "proposes 6.0 tokens (4.0 copied from the context, free; 2.0 drafted at 15 ms each)" in line
    assert "a proposed token, copies free" in line
    # A draft token at 30% of a full one is not called expensive, though c per proposed token is lower still.
    assert "a draft token costs" not in verdict(costs)
