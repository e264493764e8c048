"""The controller replayed over recorded texts (bench/replay.py): transcripts as the decoders see them, steps priced
at fixed costs."""

from __future__ import annotations

import pytest
import torch

from selfspec import DraftModel, DraftSettings, SkipProfile, autoregressive, self_speculative
from selfspec.bench.replay import Costs, Transcript, host_noise, record_transcript, replay, replay_suite
from selfspec.engine.controller import Plan
from selfspec.engine.runtime import Engine
from tiny_models import tiny_model

PROMPT = [5, 17, 42, 8, 39, 3, 23, 61]


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


def test_a_transcripts_text_is_plain_decodings_and_a_draft_that_skips_nothing_drafts_it(model):
    engine = Engine(model)
    full = DraftModel(model, SkipProfile.none(4))  # the model itself: it drafts exactly what it decodes
    transcript = record_transcript(engine, full, PROMPT, 20, max_draft=3)
    text = [t for r in autoregressive(model, PROMPT, 20, engine=engine) for t in r.token_ids]
    assert list(transcript.text) == text and transcript.prompt == tuple(PROMPT)
    assert transcript.drafts[0] == ()
    for i in range(1, len(text)):
        assert len(transcript.drafts[i]) == 3
        assert list(transcript.drafts[i][:len(text) - i]) == text[i:i + 3]  # (past the text's end: unchecked)


def test_a_transcripts_first_drafted_tokens_are_those_a_one_token_step_verifies(model):
    engine = Engine(model)
    draft = DraftModel(model, SkipProfile(num_layers=4, attn=[1, 2], mlp=[2]))
    transcript = record_transcript(engine, draft, PROMPT, 24, max_draft=1)
    settings = DraftSettings(max_draft=1, controller=False, context_tokens=0)
    done = 1
    for record in list(self_speculative(model, PROMPT, draft, 24, settings=settings, engine=engine))[1:]:
        if record.drafted:  # a step from position `done`: its one drafted token kept iff it is the text's
            assert record.accepted == (transcript.drafts[done][0] == transcript.text[done])
        done += len(record.token_ids)
    assert done == len(transcript.text)


def perfect(text: list[int], prompt: list[int], k: int) -> Transcript:
    """A transcript whose draft always drafts the text."""
    return Transcript(tuple(prompt), tuple(text), ((),) + tuple(tuple(text[i:i + k]) for i in range(1, len(text))))


def test_a_perfect_draft_without_copies_is_priced_step_by_step():
    text = list(range(100, 141))  # no token twice: the context proposes nothing
    costs = Costs(plain=1.0, draft=0.1, verify=(1.0,) * 8)
    replayed, _ = replay(perfect(text, [1, 2, 3], 4), costs, max_draft=4, context_tokens=16)
    plans = [plan for plan, _, _ in replayed.steps]
    # First a plain step (the controller measures one), then one drafted token (a draft with no evidence),
    # then the full length, every token kept.
    assert plans[:3] == [Plan(0, 0), Plan(0, 1), Plan(0, 4)]
    # 40 tokens: the last step has room for one drafted token only
    assert [n for _, n, _ in replayed.steps] == [1, 2] + [5] * 7 + [2]
    assert replayed.tokens == 40 and sum(n for _, n, _ in replayed.steps) == 40
    assert replayed.seconds == pytest.approx(1.0 + (0.1 + 1.0) + 7 * (0.4 + 1.0) + (0.1 + 1.0))
    assert replayed.speedup(costs) == pytest.approx(40 / replayed.seconds)


def test_a_text_that_copies_its_prompt_is_replayed_faster_with_copies_than_without():
    prompt = list(range(200, 260))
    text = prompt[:1] + prompt[:40]  # after its first token, the text repeats the prompt
    bad = Transcript(tuple(prompt), tuple(text), ((),) + ((7,),) * (len(text) - 1))  # a draft never right
    costs = Costs(plain=1.0, draft=0.3, verify=tuple(1.0 + 0.02 * n for n in range(1, 17)))
    with_copies, _ = replay(bad, costs, max_draft=4, context_tokens=16)
    alone, _ = replay(bad, costs, max_draft=4, context_tokens=0)
    assert with_copies.tokens == alone.tokens == len(text) - 1
    assert any(plan.copies >= 8 for plan, _, _ in with_copies.steps)
    assert with_copies.speedup(costs) > 3.0  # copies of up to 16 tokens, almost all kept
    assert alone.speedup(costs) <= 1.0  # the draft never pays: plain steps and probes


def test_a_suite_hands_each_run_what_the_last_one_measured():
    text = list(range(300, 331))
    costs = Costs(plain=1.0, draft=0.1, verify=(1.0,) * 8)
    first, second = replay_suite([perfect(text, [1], 4)] * 2, lambda i: costs, max_draft=4, context_tokens=0)
    assert first.steps[0][0] == Plan(0, 0)
    assert second.steps[0][0] == Plan(0, 4)  # the second run starts from the first's costs and acceptance


def test_noise_is_reproducible_and_moves_the_priced_time():
    text = list(range(400, 441))
    costs = Costs(plain=1.0, draft=0.1, verify=(1.0,) * 8)
    runs = [replay(perfect(text, [1], 4), costs, 4, 0, noise=host_noise(seed))[0] for seed in (1, 1, 2)]
    assert runs[0] == runs[1] and runs[0].seconds != runs[2].seconds


def test_costs_read_from_a_bench_report_extend_past_the_widths_measured():
    costs = Costs.from_bench({"full_seconds": 0.01, "draft_seconds": 0.004, "v": {"1": 1.1, "2": 1.2}}, [1.5])
    assert costs.verify_seconds(0) == pytest.approx(0.01)
    assert costs.verify_seconds(2) == pytest.approx(0.012)
    assert costs.verify_seconds(4) == pytest.approx(0.014)  # the average slope from a plain step on
    assert costs.reading_seconds(1) == pytest.approx(0.006)
    assert Costs(1.0, 0.5, (1.2, 1.4)).reading_seconds(2) == pytest.approx(0.5 * 1.4)  # d scaled like v
