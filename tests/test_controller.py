"""The step controller's decisions, from injected costs and acceptance (no clocks involved)."""

from __future__ import annotations

import itertools
import math

import pytest

from selfspec import DraftModel, DraftSettings, SkipProfile, autoregressive, self_speculative, summarize
from selfspec.engine.controller import (CopyOdds, DraftLength, Plan, best_plan, next_interval, plan_tokens, plans,
                                       nondecreasing, probe_wait, steadied, verify_costs, vetted_plans)


def expected_by_cases(copy, m, a_draft, k):
    """Tokens a step commits, summed over where the first rejection falls (not the closed form).
    `copy`: the acceptance of each copy in turn (given the ones before it were kept)."""
    survive = list(copy[:m]) + [a_draft] * k
    total, p_reached = 0.0, 1.0
    for n, a in enumerate(survive):
        total += p_reached * (1 - a) * (n + 1)  # rejected at position n: n kept + the correction
        p_reached *= a
    return total + p_reached * (len(survive) + 1)  # all kept + the bonus token


def vetted_by_cases(copy, m, a_draft, k):
    """Tokens a vetted step commits, over the cases of the draft's first token and the first copy: both
    the full model's (the draft agrees: the copies are verified, the first kept), only the copy (the
    drafts are verified, the first rejected), not the copy (the drafts, as if nothing was vetted)."""
    c1 = copy[0]
    return (a_draft * c1 * (1 + expected_by_cases(copy[1:], m - 1, a_draft, 0)) + c1 * (1 - a_draft) * 1
            + (1 - c1) * expected_by_cases((), 0, a_draft, k))


def vetted_seconds(copy, m, a_draft, k, draft, verify):
    """The draft's first token, then v(m) if it agreed with the first copy, else k - 1 more and v(k)."""
    agree = a_draft * copy[0]
    return agree * (draft + verify(m)) + (1 - agree) * (k * draft + verify(k))


def linear_verify(n: int) -> float:
    """Injected costs in units of a plain step: verifying n proposed tokens costs 1 + n/3."""
    return 1.0 + n / 3


def committed_against(proposal, kept, copy_kept):
    """What a step that kept `kept` proposed tokens committed, as the context's proposal sees it: the
    i-th token equals the i-th copy exactly when `copy_kept(i)` (-1: another token)."""
    return [proposal[i] if i < len(proposal) and copy_kept(i) else -1 for i in range(kept + 1)]


def simulate(c: DraftLength, steps: int, copy_kept, draft_kept, draft=0.43, verify=linear_verify,
             available=0, limit=1000):
    """Drive the controller against injected costs (a plain step costs 1.0). `copy_kept(i)` and
    `draft_kept(i)` say whether the i-th copied / drafted token of a step would be kept (`copy_kept`, a
    list: one such function a step, in turn); the context proposes `available` tokens every step.
    Returns the plans and the speedup over plain decoding (tokens per unit of time)."""
    chosen, seconds, tokens = [], 0.0, 0
    proposal = list(range(available))
    patterns = copy_kept if isinstance(copy_kept, list) else [copy_kept]
    for step in range(steps):
        copy_kept = patterns[step % len(patterns)]
        plan = c.plan(limit, available, 8)
        chosen.append(plan)
        m, k = plan.copies, plan.drafts
        if plan.vetted:  # the draft agrees with the first copy when both are the full model's token
            if copy_kept(0) and draft_kept(0):
                kept = next((i for i in range(m) if not copy_kept(i)), m)
                c.observe_step(m, 0, kept, draft, verify(m))
                seconds, tokens = seconds + draft + verify(m), tokens + kept + 1
            else:
                kept = next((i for i in range(k) if not draft_kept(i)), k)
                c.observe_step(0, k, kept, draft * k, verify(k))
                seconds, tokens = seconds + draft * k + verify(k), tokens + kept + 1
            c.observe_copies(proposal, committed_against(proposal, kept, copy_kept))
            continue
        if m + k == 0:
            c.observe_plain(1.0)
            c.observe_copies(proposal, committed_against(proposal, 0, copy_kept))
            seconds, tokens = seconds + 1.0, tokens + 1
            continue
        kept = next((i for i in range(m) if not copy_kept(i)), m)
        if kept == m:  # the drafts are reached only when every copy survived
            kept += next((i for i in range(k) if not draft_kept(i)), k)
        c.observe_step(m, k, kept, draft * k, verify(m + k))
        c.observe_copies(proposal, committed_against(proposal, kept, copy_kept))
        seconds, tokens = seconds + draft * k + verify(m + k), tokens + kept + 1
    return chosen, tokens / seconds


never = lambda i: False  # noqa: E731
always = lambda i: True  # noqa: E731


# --- the pure decision functions -------------------------------------------------------------------


def run(first, then, n=8):
    """Copy odds: the first copy kept with chance `first`, each later one with chance `then`."""
    return [first] + [then] * (n - 1)


@pytest.mark.parametrize("copy,a_draft", [(run(0.0, 0.0), 0.0), (run(0.5, 0.5), 0.9), (run(1.0, 1.0), 0.3),
                                          (run(0.8, 0.8), 1.0), (run(0.3, 0.95), 0.8), (run(0.9, 0.2), 0.5),
                                          (run(0.0, 1.0), 1.0), ([0.2, 0.9, 0.4, 1.0, 0.7], 0.6)])
def test_plan_tokens_is_the_sum_over_where_the_first_rejection_falls(copy, a_draft):
    for m in range(5):
        for k in range(5):
            assert plan_tokens(CopyOdds(copy), m, a_draft, k) == pytest.approx(expected_by_cases(copy, m, a_draft, k))
            if m and k:
                assert plan_tokens(CopyOdds(copy), m, a_draft, k, vetted=True) == pytest.approx(
                    vetted_by_cases(copy, m, a_draft, k))


@pytest.mark.parametrize("copy,a_draft,draft", [
    (run(0.0, 0.0), 0.0, 0.4),  # nothing is kept: a plain step
    (run(0.0, 0.0), 0.9, 0.3),  # failing copies, a good draft: draft only
    (run(0.95, 0.95), 0.0, 0.4),  # good copies, a bad draft: copy only, as wide as it pays
    (run(0.7, 0.7), 0.7, 0.2),
    (run(0.3, 0.3), 0.8, 0.6),
    (run(0.5, 0.98), 0.3, 0.5),  # copies that fail at the first token or not at all
])
def test_best_plan_has_the_highest_rate_of_all_plans(copy, a_draft, draft):
    candidates = plans(6, 4, limit=8) + [p for k in range(1, 5) for p in vetted_plans(6, k, limit=8)]
    assert Plan(6, 2) in candidates and Plan(6, 3) not in candidates and Plan(0, 4) in candidates
    assert Plan(6, 4, vetted=True) in candidates and Plan(0, 4, vetted=True) not in candidates
    rates = {Plan(m, k): expected_by_cases(copy, m, a_draft, k) / (k * draft + linear_verify(m + k))
             for m in range(7) for k in range(5) if m + k <= 8}
    rates |= {Plan(m, k, True): vetted_by_cases(copy, m, a_draft, k) / vetted_seconds(copy, m, a_draft, k, draft,
                                                                                         linear_verify)
              for m in range(1, 7) for k in range(1, 5)}
    best, rate = best_plan(candidates, CopyOdds(copy), a_draft, draft, linear_verify)
    assert rate == pytest.approx(max(rates.values()))
    assert rates[best] == pytest.approx(max(rates.values()))


def test_copies_are_used_only_when_their_kept_tokens_pay_for_the_width():
    # One copied token adds a_c tokens for 1/3 of a plain step of width: it pays when 1 + a_c > 4/3.
    assert best_plan(plans(1, 0, 8), CopyOdds([0.3]), 0.0, 0.4, linear_verify)[0] == Plan(0, 0)
    assert best_plan(plans(1, 0, 8), CopyOdds([0.4]), 0.0, 0.4, linear_verify)[0] == Plan(1, 0)
    # Free width (a GPU-like verification): even a poor copy pays.
    assert best_plan(plans(8, 0, 8), CopyOdds(run(0.2, 0.2)), 0.0, 0.4, lambda n: 1.0)[0] == Plan(8, 0)
    # A first copy kept one time in two, but a copy that starts goes on: copy all 8 (1 + 0.5 * 7.7
    # tokens for 11/3 of a plain step), where one acceptance of 0.5 for all would copy one (1.5 for 4/3).
    assert best_plan(plans(8, 0, 8), CopyOdds(run(0.5, 0.99)), 0.0, 0.4, linear_verify)[0] == Plan(8, 0)
    assert best_plan(plans(8, 0, 8), CopyOdds(run(0.5, 0.5)), 0.0, 0.4, linear_verify)[0] == Plan(1, 0)


def test_the_probe_interval_doubles_and_keeps_probes_within_their_budget():
    assert probe_wait(0.0, plain_seconds=1.0, explore=0.03) == 1
    assert probe_wait(0.76, plain_seconds=2.0, explore=0.03) == math.ceil(0.38 / 0.03)
    assert next_interval(1, wait=1, longest=64) == 2
    assert next_interval(8, wait=3, longest=64) == 16
    assert next_interval(1, wait=26, longest=64) == 26
    assert next_interval(40, wait=26, longest=64) == 64


def test_verification_cost_of_unmeasured_widths():
    assert verify_costs([(0, 1.0)], 3) == [1.0] * 4  # nothing else measured yet
    assert verify_costs([(0, 1.0), (2, 1.6)], 6)[1] == pytest.approx(1.3)  # between a plain step and 2 verified
    assert verify_costs([(0, 1.0), (2, 1.6)], 6)[6] == pytest.approx(1.6 + 4 * 0.3)  # beyond: the slope from the plain step
    measured = [(0, 1.0), (2, 1.6), (4, 1.6)]
    assert verify_costs(measured, 8)[3] == pytest.approx(1.6)
    # Beyond 4: the average slope from the plain step (1.0) to the widest (1.6 at 4), not the flat last one.
    assert verify_costs(measured, 8)[8] == pytest.approx(1.6 + 4 * (0.6 / 4))
    assert verify_costs(measured + [(5, 1.5)], 9)[9] == pytest.approx(1.5 + 4 * (0.5 / 5))
    assert verify_costs(measured + [(5, 1.5), (6, 0.9)], 9)[9] == pytest.approx(0.9)  # never falling below the widest
    c = DraftLength(4)  # the controller's table: two widths measured once each lie on their own line
    c.observe_plain(1.0)
    c.observe_step(0, 2, 0, 0.8, 1.6)
    assert c.verify_seconds(1) == pytest.approx(1.3) and c.verify_seconds(6) == pytest.approx(1.6 + 4 * 0.3)


def test_a_width_measured_too_few_times_is_priced_at_most_at_the_line_through_the_other_widths():
    import numpy as np
    points = [(0, 1.0, 3), (1, 1.1, 5), (2, 1.2, 4), (3, 1.3, 5), (5, 2.5, 1), (6, 1.0, 2)]  # one slow sample at 5

    def line_without(i):  # weighted least squares through the other points, by numpy
        n, x, w = (np.array(column, dtype=float) for column in zip(*(points[:i] + points[i + 1:])))
        slope, intercept = np.polyfit(n, x, 1, w=np.sqrt(w))
        return intercept + slope * points[i][0]
    expected = [(n, x if w >= 3 else min(x, line_without(i))) for i, (n, x, w) in enumerate(points)]
    assert steadied(points, trusted=3) == [(n, pytest.approx(e)) for n, e in expected]
    assert steadied(points, trusted=3)[4][1] < 1.6 and steadied(points, trusted=3)[5][1] == 1.0  # only ever lower
    # A falling fit is flat, at the weighted mean; a width measured often enough keeps its own cost.
    assert steadied([(0, 1.0, 3), (4, 0.8, 3), (5, 0.95, 1)], trusted=3) == [
        (0, 1.0), (4, 0.8), (5, pytest.approx((3 * 1.0 + 3 * 0.8) / 6))]
    assert steadied([(0, 1.0, 5), (2, 3.0, 1)], trusted=3) == [(0, 1.0), (2, 3.0)]  # no other two widths: no line


def test_verification_costs_are_fitted_never_to_fall_with_width():
    points = [(0, 20.0, 3), (2, 25.5, 5), (3, 22.0, 5), (4, 24.9, 5), (5, 26.0, 2), (6, 25.0, 1), (8, 30.0, 4)]

    def mean(i, j):  # sample-weighted mean of points i..j
        return sum(x * w for _, x, w in points[i:j + 1]) / sum(w for _, _, w in points[i:j + 1])
    # The least-squares nondecreasing fit in closed form: max over starts of min over ends of the block means.
    expected = [max(min(mean(s, t) for t in range(i, len(points))) for s in range(i + 1)) for i in range(len(points))]
    fitted = nondecreasing(points)
    assert [n for n, _ in fitted] == [n for n, _, _ in points]
    assert [x for _, x in fitted] == pytest.approx(expected)
    assert fitted[1][1] == fitted[2][1] == pytest.approx(mean(1, 2))  # widths 2 and 3 pooled: 23.75
    assert fitted[4][1] == fitted[5][1] == pytest.approx(mean(4, 5)) and fitted[3][1] == 24.9
    assert nondecreasing([(0, 1.0, 3), (2, 1.5, 1)]) == [(0, 1.0), (2, 1.5)]  # already rising: unchanged
    # The controller's table: width 3, measured cheaper than width 2, is priced as width 2 is.
    c = DraftLength(4)
    c.observe_plain(20.0)
    for n, cost in ((2, 25.5), (3, 22.0), (4, 24.9)):
        for _ in range(5):
            c.observe_step(0, n, n, 1.0, cost)
    table = [c.verify_seconds(n) for n in range(5)]
    assert table == sorted(table) and table[2] == table[3] == pytest.approx(23.75) and table[4] == 24.9


def test_one_slow_verification_does_not_keep_a_good_draft_short():
    # The host stalls once, in the first verification of the widest plan: on the measured costs alone
    # that width was priced out for the rest of the run (and, carried, for the runs after it).
    slow = iter([2.6])

    def verify(n):
        return (next(slow, None) if n == 8 else None) or 1.0 + 0.05 * n
    chosen, _ = simulate(DraftLength(8), 60, never, always, draft=0.2, verify=verify)
    assert Plan(0, 8) in chosen[:6] and chosen[-20:] == [Plan(0, 8)] * 20


def test_one_stalled_draft_token_does_not_keep_a_good_draft_out():
    # The host stalls once, in the first drafted token (a bench's warm-up beside another job): priced at
    # that token, the draft lost to plain steps, and each rare probe moved an average of its cost a little
    # (~13 probes, 64 steps apart, before it drafted again).
    stalled = iter([40.0])

    c = DraftLength(8)
    c.observe_plain(1.0)
    assert c.plan(100, 0, 8) == Plan(0, 1)
    c.observe_step(0, 1, 1, next(stalled), 1.05)  # kept, but timed at 40 plain steps
    chosen = []
    for _ in range(8):  # runs of 24 steps, each starting from what the last one measured, as a bench's are
        carried = c.carried()
        c = DraftLength(8)
        c.start_from(carried)
        chosen += simulate(c, 24, never, always, draft=0.4, verify=lambda n: 1.0 + 0.05 * n)[0]
    first = next(i for i, plan in enumerate(chosen) if plan != Plan(0, 0))
    # One probe, no later than the longest wait, though each run is shorter than that: the probes' clock
    # runs on from run to run.
    assert chosen[first] == Plan(0, 1) and first <= c.max_probe
    # Measured cheap: drafted from then on, mostly at full length (each run ramps up from its carried evidence).
    assert all(k >= 3 for _, k, _ in chosen[first + 1:]) and chosen.count(Plan(0, 8)) > len(chosen[first:]) // 2


def test_one_stalled_plain_step_does_not_keep_a_bad_draft_drafting():
    # The first plain step stalls (a busy host at a request's start): priced at 40 steps, plain steps lost
    # to a draft whose every token was rejected, and were never measured again: 0.57x plain decoding.
    c = DraftLength(4)
    assert c.plan(100, 0, 8) == Plan(0, 0)
    c.observe_plain(40.0)
    chosen, speedup = simulate(c, 96, never, never)
    assert chosen.count(Plan(0, 0)) >= 90 and speedup > 0.95
    assert c.plain_seconds() == pytest.approx(1.0)


# --- the controller over a run ---------------------------------------------------------------------


def test_first_a_plain_step_then_a_one_token_draft():
    c = DraftLength(5)
    assert c.plan(10, 0, 8) == Plan(0, 0)  # measures the full model first
    c.observe_plain(1.0)
    assert c.plan(10, 0, 8) == Plan(0, 1)  # nothing known about the draft: a short first draft, not K
    assert c.plan(0, 0, 8) == Plan(0, 0)  # nothing left to propose


def test_a_good_draft_is_drafted_at_full_length_once_it_is_known():
    chosen, speedup = simulate(DraftLength(4), 30, never, always, draft=0.2, verify=lambda n: 1.0 + 0.05 * n)
    assert chosen[:3] == [Plan(0, 0), Plan(0, 1), Plan(0, 4)]
    assert set(chosen[2:]) == {Plan(0, 4)}
    assert speedup == pytest.approx((1 + 2 + 28 * 5) / (1 + 1.25 + 28 * 2.0))  # 1 plain, 1 probe, 28 at K


def test_a_bad_draft_gets_plain_steps_and_rare_one_token_probes():
    chosen, speedup = simulate(DraftLength(4), 96, never, never)
    probes = [i for i, plan in enumerate(chosen) if plan != Plan(0, 0)]
    assert all(chosen[i] == Plan(0, 1) for i in probes)  # cheap probes, never a K-token draft
    plain_between = [b - a - 1 for a, b in zip(probes, probes[1:])]
    assert len(probes) <= 4 and all(b >= 2 * a for a, b in zip(plain_between, plain_between[1:]))
    # The first wait is set by the probe's expected waste (a one-token draft at the prior-tempered
    # acceptance 1.5 / 3 loses 0.43 + 1/3 - 1/2 of a step: 9 steps at 3%), then doubles.
    assert plain_between[0] >= math.ceil((0.43 + 1 / 3 - 0.5) / 0.03) and plain_between[-1] >= 32
    # Each probe wastes 0.43 + 1/3 of a plain step; the probes (first one included) stay within ~3%.
    assert speedup == pytest.approx(96 / (96 + len(probes) * (0.43 + 1 / 3)))
    assert speedup > 0.96


def test_a_draft_kept_now_and_then_but_never_paying_is_probed_ever_more_rarely():
    # What the bench's bad draft does: one probe in five kept. A kept probe that does not make the draft
    # pay must not restart the probes' schedule (it did, and probes cost that draft 5% on a QA prompt).
    probes_made = itertools.count()
    sometimes = lambda i: i == 0 and next(probes_made) % 5 == 4  # noqa: E731
    chosen, speedup = simulate(DraftLength(4), 300, never, sometimes, draft=0.5, verify=lambda n: 1.0 + 0.3 * n)
    probes = [i for i, plan in enumerate(chosen) if plan != Plan(0, 0)]
    assert all(chosen[i] == Plan(0, 1) for i in probes)
    gaps = [b - a for a, b in zip(probes, probes[1:])]
    assert gaps == sorted(gaps) and gaps[-1] >= 32
    assert speedup >= 0.97


def test_a_draft_always_kept_but_as_slow_as_the_model_gets_plain_steps():
    # The draft is the model itself: every token kept, but drafting one costs a full step and its
    # verification 1.45 (what auto's full-weight, skip-nothing draft measured on a loaded CPU).
    chosen, speedup = simulate(DraftLength(4), 96, never, always, draft=1.0, verify=lambda n: 1.0 + 0.45 * n)
    probes = [i for i, plan in enumerate(chosen) if plan != Plan(0, 0)]
    assert all(chosen[i] == Plan(0, 1) for i in probes) and len(probes) <= 8
    assert speedup >= 0.97


def test_a_probe_that_is_accepted_resumes_drafting():
    c = DraftLength(4)
    simulate(c, 40, never, never, draft=0.2, verify=lambda n: 1.0 + 0.05 * n)
    chosen, _ = simulate(c, 70, never, always, draft=0.2, verify=lambda n: 1.0 + 0.05 * n)
    first = next(i for i, plan in enumerate(chosen) if plan != Plan(0, 0))
    assert chosen[first] == Plan(0, 1)  # the probe, kept
    assert first < 64  # the longest wait
    # The text became predictable: drafting resumes within a few steps and reaches K.
    resumed = next(i for i in range(first, len(chosen)) if chosen[i:i + 10] == [Plan(0, 4)] * 10)
    assert resumed - first <= 12  # the failed probes' evidence fades by 0.9 a step


# --- copies from the context against the model's draft ----------------------------------------------


def test_copies_that_always_fail_stop_being_proposed():
    verify = lambda n: 1.0 + 0.05 * n  # noqa: E731  (cheap width: the hardest case to stop copying in)
    with_copies, speedup = simulate(DraftLength(4), 200, never, always, draft=0.3, verify=verify, available=8)
    _, draft_alone = simulate(DraftLength(4), 200, never, always, draft=0.3, verify=verify)
    # Scored for free against what the full model commits at every step, copies that never match are
    # never verified, not even probed.
    assert not any(plan.copies and not plan.vetted for plan in with_copies)
    assert speedup >= 0.97 * draft_alone


def test_copies_that_fail_at_once_or_run_on_are_vetted_by_the_draft():
    # A summary quoting its article: two copies in three are wrong at their first token, the others run
    # on. A good draft's first token tells the two apart, for the price of one drafted token.
    verify = lambda n: 1.0 + 0.04 * n  # noqa: E731
    chosen, with_copies = simulate(DraftLength(8), 300, [never, never, always], always, draft=0.2, verify=verify,
                                   available=8)
    _, draft_alone = simulate(DraftLength(8), 300, never, always, draft=0.2, verify=verify)
    assert sum(plan.vetted for plan in chosen[20:]) > 250
    # By hand, three steps: twice the draft disagrees and 8 are drafted (9 tokens for 8 * 0.2 + 1.32), once
    # it agrees and 8 copies are verified behind its one token (9 tokens for 0.2 + 1.32). Drafting alone
    # is 9 tokens for 2.92 every step; copying unvetted 11 tokens for 3 * 1.32.
    assert with_copies == pytest.approx(27 / (2 * 2.92 + 1.52), rel=0.02)
    assert with_copies > 1.15 * draft_alone and draft_alone == pytest.approx(9 / 2.92, rel=0.02)


def test_copies_that_succeed_are_used_as_wide_as_they_pay():
    chosen, speedup = simulate(DraftLength(4), 60, always, never, available=8)
    # A plain step measures f, and shows the copy matching what the full model chose; the draft, not
    # known yet, gets its one-token probe; within a few steps every step copies all it may, but for
    # the failing draft's rare probes.
    assert chosen[:2] == [Plan(0, 0), Plan(0, 1)]
    assert all(plan in (Plan(8, 0), Plan(0, 1)) for plan in chosen[6:]) and chosen.count(Plan(8, 0)) >= 50
    assert speedup > 2.0


def test_the_plan_maximises_the_expected_rate_when_no_probe_is_due():
    c = DraftLength(4)
    c.observe_plain(1.0)
    for _ in range(40):  # copies keep 2 of 4, drafts 3 of 4; verifying 4 costs 1.2
        c.observe_step(4, 0, 2, 0.0, 1.2)
        c.observe_copies([1, 2, 3, 4], [1, 2, 9], match=2)
        c.observe_step(0, 4, 3, 4 * 0.3, 1.2)
    odds, a_d = c.copy_odds(2, 6).kept, c.acceptance()
    weight = sum(0.9 ** i for i in range(40))  # each step's evidence decays by 0.9 per later step
    # Geometric MLE, by hand, from the sources' pseudo-counts on: copies extending a match of 2 or 3
    # tokens always kept (prior 0.5 : 0.5), of 4 to 7 always rejected (prior 0.7 : 0.3); drafts 3 : 1
    # (prior 1.5 : 0.5).
    extend_2_3, extend_4_7 = (2 * weight + 0.5) / (2 * weight + 1), 0.7 / (weight + 1)
    assert odds == pytest.approx([extend_2_3] * 2 + [extend_4_7] * 4)
    assert a_d == pytest.approx((3 * weight + 1.5) / (4 * weight + 2))
    c.drafts.interval = 100  # no probe due

    def seconds(m, k):  # v from 1.0 to 1.2; a draft after m copies first reads them: d scaled like v
        drafting = 0.0 if not k else (0.3 * (1.0 + 0.05 * m) if m else 0.3) + (k - 1) * 0.3
        return drafting + 1.0 + 0.05 * (m + k)
    rates = {Plan(m, k): expected_by_cases(tuple(odds), m, a_d, k) / seconds(m, k)
             for m in range(7) for k in range(5) if m + k <= 6}
    alone = max({p: r for p, r in rates.items() if not p.copies}, key=rates.get)
    # Vetted copies fall back on the draft alone's best length.
    vetted = {Plan(m, alone.drafts, True): vetted_by_cases(tuple(odds), m, a_d, alone.drafts)
              / vetted_seconds(odds, m, a_d, alone.drafts, 0.3, lambda n: 1.0 + 0.05 * n) for m in range(1, 7)}
    assert c.plan(limit=6, available=6, max_context=8) == max(rates | vetted, key=(rates | vetted).get)
    assert c.plan(limit=6, available=0, max_context=8) == alone
    assert sum(c.plan(limit=2, available=5, max_context=8)) <= 2  # never past the tokens left


def test_plain_steps_are_recorded_and_lossless(monkeypatch):
    from tiny_models import tiny_model

    model = tiny_model("llama")
    expected = [t for r in autoregressive(model, [5, 6, 7], 20) for t in r.token_ids]
    never_drafts = lambda self, limit, available, max_context, match: Plan(0, 0)  # noqa: E731
    monkeypatch.setattr(DraftLength, "plan", never_drafts)
    settings = DraftSettings(max_draft=4, controller=True)
    records = list(self_speculative(model, [5, 6, 7], SkipProfile(4, attn=[0]), 20, settings=settings))
    assert [t for r in records for t in r.token_ids] == expected
    assert [r.kind for r in records] == ["prefill"] + ["decode"] * 19
    summary = summarize(records)
    assert summary.plain_steps == 19 and summary.verifications == 0


def test_bad_controller_settings_are_refused():
    with pytest.raises(ValueError, match="max_draft must be a positive integer"):
        DraftLength(0)


def test_copies_are_scored_against_what_the_full_model_committed_by_the_match_they_extend():
    lengths = DraftLength(4)
    # Before any evidence, the priors: copies extending a match of 1, 2-3, 4-7, 8-15 and 16+ tokens.
    assert lengths.copy_odds(1, 17).kept == pytest.approx([0.25, 0.5, 0.5] + [0.7] * 4 + [0.8] * 8 + [0.9] * 2)
    # The context proposed 3, 4, 5 after a 2-token match; the full model committed 3, 4, 9: the copies
    # extending matches of 2 and 3 kept, the one extending 4 rejected.
    lengths.observe_copies([3, 4, 5], [3, 4, 9], match=2)
    assert lengths.copy_odds(2, 3).kept == pytest.approx([(2 + 0.5) / (2 + 1)] * 2 + [0.7 / (1 + 1)])
    # All it could be checked on matched (the step committed fewer tokens than were proposed): kept,
    # no rejection seen; the earlier evidence decays by 0.9.
    lengths.observe_copies([7, 8, 9, 10], [7, 8], match=6)
    assert lengths.copy_odds(6, 2).kept == pytest.approx([(2 + 0.7) / (2 + 0.9 + 1)] * 2)
    lengths.observe_copies([], [1, 2], match=2)  # nothing proposed: nothing learned
    lengths.observe_copies([1, 2], [], match=2)  # nothing committed: nothing learned
    assert lengths.copy_odds(2, 1).kept == pytest.approx([(2 + 0.5) / (2 + 1)])
    # A long copy's tokens are evidence for the lengths they extend: 15, then 16 and 17.
    lengths.observe_copies([1, 2, 3], [1, 2, 3, 4], match=15)
    assert lengths.copy_odds(15, 3).kept == pytest.approx([(1 + 0.8) / (1 + 1)] + [(2 + 0.9) / (2 + 1)] * 2)


def test_the_context_earns_its_place_without_probes_once_the_text_copies():
    # A run where the full model's output starts copying the context after a first wrong guess:
    # scored for free at every step, the copies enter the plan as soon as they pay.
    lengths = DraftLength(4)
    lengths.observe_plain(0.1)
    for _ in range(3):
        lengths.observe_copies([1, 2, 3], [9])  # wrong at once
    lengths.observe_step(0, 2, 2, 0.1, 0.12)  # a draft step measures d and v(2)
    plan = lengths.plan(limit=16, available=8, max_context=8)
    assert plan.copies == 0 or plan.vetted  # copies verified only where the draft would choose them too
    for _ in range(6):
        lengths.observe_copies([4, 5, 6, 7, 8], [4, 5, 6, 7, 9])
    assert lengths.plan(limit=16, available=8, max_context=8)[0] > 0


def test_a_draft_after_copies_pays_for_reading_them_and_leaves_the_drafting_cost_alone():
    c = DraftLength(4)
    c.observe_plain(1.0)
    for _ in range(30):  # both sources always kept; d = 0.2; v(n) = 1 + 0.05 n
        c.observe_step(0, 4, 4, 4 * 0.2, 1.2)
        c.observe_step(2, 0, 2, 0.0, 1.1)
        c.observe_copies([1, 2], [1, 2, 3])
    c.drafts.interval = 100  # no probe due
    # Before it is measured, reading 2 copies is priced as d scaled like the verification: 0.2 * 1.1.
    assert c.reading_table(2)[2] == pytest.approx(0.2 * 1.1)
    odds, a_d = c.copy_odds(2, 2).kept, c.acceptance()
    copy_only = expected_by_cases(odds, 2, a_d, 0) / 1.1
    assert expected_by_cases(odds, 2, a_d, 4) / (0.22 + 3 * 0.2 + 1.3) > copy_only
    assert c.plan(limit=16, available=2, max_context=8) == Plan(2, 4)
    # Measured: the draft's forward over the 2 copies took 1.5, the 3 tokens after them 0.2 each.
    c.observe_step(2, 4, 6, 1.5 + 3 * 0.2, 1.3, reading_seconds=1.5)
    assert c.draft.value == pytest.approx(0.2)  # the wide forward is not counted as drafting
    assert c.reading_table(2)[2] == pytest.approx(1.5)
    c.observe_copies([1, 2], [1, 2, 3, 4, 5, 6, 7])
    odds, a_d = c.copy_odds(2, 2).kept, c.acceptance()
    assert expected_by_cases(odds, 2, a_d, 4) / (1.5 + 3 * 0.2 + 1.3) < expected_by_cases(odds, 2, a_d, 0) / 1.1
    assert c.plan(limit=16, available=2, max_context=8) == Plan(2, 0)  # copying alone now wins


def test_copies_after_one_token_matches_are_learned_apart_from_longer_matches():
    lengths = DraftLength(4)
    lengths.observe_plain(0.1)
    lengths.observe_step(0, 2, 2, 0.06, 0.12)  # a draft step measures d and v(2)
    for _ in range(6):  # copies after one-token matches keep being wrong; after longer ones right till the 3rd
        lengths.observe_copies([4, 5, 6], [9], match=1)
        lengths.observe_copies([4, 5, 6], [4, 5, 7], match=3)
    weight = sum(0.9 ** i for i in range(6))
    assert lengths.copy_odds(1, 1).kept == pytest.approx([0.25 / (weight + 1)])  # prior 0.25 : 0.75
    assert lengths.copy_odds(2, 1).kept == pytest.approx([(weight + 0.5) / (weight + 1)])  # prior 0.5 : 0.5
    assert lengths.copy_odds(4, 1).kept == pytest.approx([(weight + 0.7) / (2 * weight + 1)])  # one of two
    plan = lengths.plan(limit=16, available=8, max_context=8, match=1)
    assert plan.copies == 0 or plan.vetted
    plan = lengths.plan(limit=16, available=8, max_context=8, match=2)
    assert plan.copies > 0 and not plan.vetted


def test_a_run_starts_from_what_the_last_run_with_the_draft_measured():
    first = DraftLength(4)
    simulate(first, 30, never, always, draft=0.2, verify=lambda n: 1.0 + 0.05 * n)
    carried = first.carried()
    assert carried.full == pytest.approx(1.0) and carried.draft == pytest.approx(0.2)
    assert carried.verify[4] == pytest.approx(1.2)
    kept, failures = carried.sources["drafts"]
    assert kept + failures == pytest.approx(3.0)  # discounted to a few tokens of evidence
    assert failures == pytest.approx(3.0 * first.drafts.failures / (first.drafts.kept + first.drafts.failures))
    second = DraftLength(4)
    second.start_from(carried)
    # No plain step to learn f, no one-token probe: the draft, known good, at full length at once.
    assert second.plan(10, 0, 8) == Plan(0, 4)
    assert DraftLength(4).plan(10, 0, 8) == Plan(0, 0)  # a controller with no past measures a plain step first


def test_a_run_does_not_inherit_the_last_runs_copy_odds():
    # Copies that always ran on in one text (a retrieval answer) say nothing of the next text's.
    first = DraftLength(4)
    simulate(first, 30, always, always, draft=0.2, verify=lambda n: 1.0 + 0.05 * n, available=8)
    assert first.copy_odds(4, 1).kept[0] > 0.9
    carried = first.carried()
    assert set(carried.sources) == {"drafts"}
    second = DraftLength(4)
    second.start_from(carried)
    assert second.copy_odds(4, 3).kept == DraftLength(4).copy_odds(4, 3).kept == pytest.approx((0.7, 0.7, 0.7))


def test_a_draft_remembers_its_last_run_for_the_next():
    from tiny_models import tiny_model
    from selfspec.engine.controller import Carried

    model = tiny_model("llama")
    expected = [t for r in autoregressive(model, [5, 6, 7], 20) for t in r.token_ids]
    draft = DraftModel(model, SkipProfile(4), weights="int8")
    settings = DraftSettings(max_draft=4, controller=True, context_tokens=0)
    first = list(self_speculative(model, [5, 6, 7], draft, 20, settings=settings))
    assert first[1].kind == "decode"  # nothing carried: a plain step measures f first
    plain = [r.verify_seconds for r in first if r.kind == "decode"]
    # The lowest of the last plain steps (or a cheaper verification, which a plain step cannot outlast).
    assert draft.carried is not None and 0 < draft.carried.full <= min(plain[-5:])
    # What a run with a cheap, always-kept draft would leave behind (injected: clocks vary): the next
    # run's first step drafts K at once.
    draft.carried = Carried(full=1.0, draft=0.01, verify={n: 1.0 for n in range(1, 5)}, reading={},
                            sources={"drafts": (3.0, 0.0)})
    second = list(self_speculative(model, [5, 6, 7], draft, 20, settings=settings))
    assert (second[1].kind, second[1].drafted) == ("speculate", 4)
    assert [t for r in second for t in r.token_ids] == expected
    assert draft.with_profile(SkipProfile(4, attn=[1])).carried is None  # another skip set starts afresh
