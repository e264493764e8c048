"""Figures computed from step records (engine/metrics.py) and the benchmark rows built on them
(bench/results.py), checked against numbers worked out by hand for small made-up runs."""

from __future__ import annotations

import pytest

from selfspec.bench.costmodel import Costs
from selfspec.bench.results import AR, Run, summarize_runs
from selfspec.bench.runner import Method
from selfspec.engine.metrics import decode_metrics, summarize
from selfspec.engine.records import StepRecord
from selfspec.engine.settings import DraftSettings


def step(n, kind, tokens, drafted=0, accepted=0, draft=0.0, verify=0.0, elapsed=0.0):
    return StepRecord(n, kind, tuple(tokens), drafted, accepted, draft, verify, elapsed)


# One self-speculative run: a prefill, then 3 + 1 tokens from two verifications.
SPEC = [step(0, "prefill", [5], verify=0.4, elapsed=0.5),
        step(1, "speculate", [6, 7, 8], drafted=4, accepted=2, draft=0.08, verify=0.05, elapsed=0.7),
        step(2, "speculate", [9], drafted=1, accepted=0, draft=0.02, verify=0.04, elapsed=0.8)]


def test_decode_metrics_leave_the_prefill_out():
    m = decode_metrics([SPEC])
    assert (m.tokens, m.verifications, m.drafted, m.accepted, m.committed) == (4, 2, 5, 2, 4)
    assert m.seconds == pytest.approx(0.3)  # 0.8 s at the end, 0.5 s when the prefill ended
    assert m.seconds_per_token == pytest.approx(0.075)
    assert m.acceptance == pytest.approx(0.4)
    assert m.mean_accepted_tokens == pytest.approx(2.0)
    assert m.mean_drafted == pytest.approx(2.5)
    assert m.draft_seconds_per_token == pytest.approx(0.02)  # 0.1 s over 5 drafted tokens
    assert m.verify_seconds_per_step == pytest.approx(0.045)
    assert m.draft_lengths == (4, 1)
    assert m.full_seconds_per_token is None  # no plain decode step


def test_a_drafted_token_that_vetted_copies_is_counted_as_drafting():
    # 3 copies verified after the draft's first token agreed with them (0.02 s), then 2 drafted tokens.
    vetted = StepRecord(1, "speculate", (6, 7, 8, 9), 3, 3, 0.02, 0.05, 0.7, copied=3, vetted=True)
    drafted = StepRecord(2, "speculate", (10, 11), 2, 1, 0.04, 0.04, 0.8)
    m = decode_metrics([[SPEC[0], vetted, drafted]])
    assert m.draft_seconds_per_token == pytest.approx(0.06 / 3)  # three draft forwards, two of them proposals
    assert m.vetted == (True, False) and m.copied == 3 and m.drafted == 5


def test_decode_metrics_add_runs_up_and_an_empty_run_has_no_rates():
    twice = decode_metrics([SPEC, SPEC])
    assert (twice.tokens, twice.drafted) == (8, 10) and twice.seconds == pytest.approx(0.6)
    assert twice.acceptance == pytest.approx(0.4)
    nothing = decode_metrics([[SPEC[0]]])
    assert nothing.tokens == 0 and nothing.acceptance is None and nothing.seconds_per_token is None


def test_summary_counts_the_whole_run():
    s = summarize(SPEC)
    assert (s.new_tokens, s.drafted, s.accepted, s.verifications) == (5, 5, 2, 2)
    assert s.seconds == pytest.approx(0.8) and s.tokens_per_second == pytest.approx(6.25)
    assert s.acceptance_rate == pytest.approx(0.4) and s.mean_accepted_tokens == pytest.approx(2.0)
    assert s.draft_seconds == pytest.approx(0.1) and s.verify_seconds == pytest.approx(0.49)


def ar_run():
    """7 tokens: the prefill's, then 6 decode steps of 0.1 s each."""
    records = [step(0, "prefill", [1], verify=0.1, elapsed=0.1)]
    records += [step(i, "decode", [i + 1], verify=0.1, elapsed=0.1 + 0.1 * i) for i in range(1, 7)]
    return Run([r.token_ids[0] for r in records], 0.7, records)


def spec_run():
    """The same 7 tokens: the prefill's, then two steps that each drafted 2 (both kept) and added 1."""
    records = [step(0, "prefill", [1], verify=0.1, elapsed=0.1),
               step(1, "speculate", [2, 3, 4], drafted=2, accepted=2, draft=0.04, verify=0.1, elapsed=0.25),
               step(2, "speculate", [5, 6, 7], drafted=2, accepted=2, draft=0.04, verify=0.1, elapsed=0.40)]
    return Run([1, 2, 3, 4, 5, 6, 7], 0.35, records)


def methods_ar_and_spec() -> list[Method]:
    return [Method(AR, decode=None), Method("spec", decode=None, draft=object(), settings=DraftSettings(max_draft=2))]


def test_benchmark_rows_from_hand_built_runs():
    methods = methods_ar_and_spec()
    runs = {AR: [ar_run(), ar_run()], "spec": [spec_run(), spec_run()]}
    costs = {("spec", c): Costs(full_seconds=0.1, draft_seconds=0.05, c=0.5, v={1: 1.2, 2: 1.5}, context=1)
             for c in ("x", "all")}
    rows = {(r.method, r.category): r for r in summarize_runs(methods, ["x", "x"], runs, costs)}
    ar, spec = rows[(AR, "all")], rows[("spec", "all")]
    assert ar.speedup == pytest.approx(1.0) and ar.bound is None and ar.acceptance is None
    assert spec.tokens_per_second == pytest.approx(20.0) and spec.speedup == pytest.approx(2.0)
    assert spec.identical
    assert (spec.acceptance, spec.mean_accepted_tokens, spec.mean_drafted, spec.a) == (1.0, 3.0, 2.0, 1.0)
    # Isolated costs: each step commits E = 3 tokens for 2 * 0.5 + 1.5 = 2.5 units.
    assert (spec.c, spec.v) == (0.5, 1.5)
    assert spec.bound == pytest.approx(1.2) and spec.efficiency == pytest.approx(2.0 / 1.2)
    # In-run costs, unit 0.1 s (the AR decode time per token): drafting 0.02 s a token, verifying 0.1 s;
    # decoding after the prefill took 0.3 s for 6 tokens against 0.6 s.
    assert spec.c_in_run == pytest.approx(0.2) and spec.v_in_run == pytest.approx(1.0)
    assert spec.decode_speedup == pytest.approx(2.0)
    assert spec.bound_in_run == pytest.approx(3 / 1.4) and spec.efficiency_in_run == pytest.approx(2.0 * 1.4 / 3)
    assert rows[("spec", "x")] == spec.__class__(**{**spec.__dict__, "category": "x"})


def test_rows_say_when_outputs_differ():
    other = spec_run()
    other.tokens = [1, 2, 3, 4, 5, 6, 99]
    methods = methods_ar_and_spec()
    rows = summarize_runs(methods, ["x"], {AR: [ar_run()], "spec": [other]}, {})
    assert [(r.category, r.identical) for r in rows] == [("x", True), ("x", False), ("all", True), ("all", False)]
    assert rows[1].bound is None  # no isolated costs measured: no isolated bound
