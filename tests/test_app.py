"""The web app: its library helpers, and the app itself launched here and driven by gradio_client.

The real embedded model is loaded once (by importing app.py); every request is a few tokens long.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from selfspec.engine.records import StepRecord
from selfspec.ui.charts import figures
from selfspec.ui.form import parse_form
from selfspec.ui.race import Lane, Race, run_race
from selfspec.ui.render import MARKS, draft_label, panels, segments, summary_line, token_sources

SHORT = 10  # new tokens per request: enough for several speculative steps


def record(step, kind, tokens, drafted=0, accepted=0, seconds=0.01):
    return StepRecord(step, kind, tuple(tokens), drafted, accepted, 0.0, seconds, seconds * (step + 1))


# --- library helpers (no model) ---------------------------------------------------------------


def test_token_sources_mark_drafts_corrections_and_bonus_tokens():
    assert token_sources(record(0, "prefill", [5])) == ["full"]
    assert token_sources(record(1, "speculate", [1, 2, 3], drafted=4, accepted=2)) == ["draft", "draft", "correction"]
    assert token_sources(record(2, "speculate", [1, 2, 3], drafted=2, accepted=2)) == ["draft", "draft", "bonus"]
    # A step cut short by the token budget or an end-of-sequence token keeps the leading sources.
    assert token_sources(record(3, "speculate", [1, 2], drafted=4, accepted=4)) == ["draft", "draft"]


def test_the_speculative_panel_names_the_draft_it_races():
    from selfspec import DraftModel, SkipProfile
    from tiny_models import tiny_model

    model = tiny_model("llama", seed=1, num_hidden_layers=4)
    skips = SkipProfile(num_layers=4, attn=(1,), mlp=(2, 3))
    assert draft_label(DraftModel(model, skips)) == "skip-layer draft (3 of 8 sublayers skipped)"
    assert draft_label(DraftModel(model, SkipProfile.none(4), weights="int4")) == "int4-weight draft, nothing skipped"
    assert draft_label(DraftModel(model, skips, weights="int8")) == "int8-weight draft, 3 of 8 sublayers skipped"
    race = Race(Lane("autoregressive"), Lane("self-speculative"))
    _, spec_html = panels(lambda ids: "", race, running=False, draft="int4-weight draft, nothing skipped")
    assert "int4-weight draft, nothing skipped, one full-model check per step" in spec_html
    assert "skip" not in panels(lambda ids: "", race, running=False)[1].split("one full-model check")[0]


def test_token_sources_mark_tokens_copied_from_the_context():
    # 3 copied then 2 drafted, 4 kept: the 3 copied, 1 drafted, then the full model's correction.
    step = StepRecord(1, "speculate", (1, 2, 3, 4, 5), 5, 4, 0.0, 0.01, 0.02, copied=3)
    assert token_sources(step) == ["copied", "copied", "copied", "draft", "correction"]
    rejected_copy = StepRecord(2, "speculate", (1, 2), 5, 1, 0.0, 0.01, 0.03, copied=3)  # the 2nd copied token lost
    assert token_sources(rejected_copy) == ["copied", "correction"]


def test_plain_steps_are_marked_in_the_panel_the_charts_and_the_summary():
    # A controller's run: prefill, a speculative step, two plain steps (no draft), another speculative step.
    spec = [record(0, "prefill", [1]), record(1, "speculate", [2, 3], drafted=2, accepted=1),
            record(2, "decode", [4]), record(3, "decode", [5]), record(4, "speculate", [6, 7, 8], drafted=2, accepted=2)]
    assert [s for r in spec for s in token_sources(r)] == ["full", "draft", "correction", "plain", "plain", "draft",
                                                           "draft", "bonus"]
    race = Race(Lane("autoregressive"), Lane("self-speculative"))
    for i, r in enumerate([record(0, "prefill", [1])] + [record(i, "decode", [i + 1]) for i in range(1, 8)]):
        race.autoregressive.add(r, 0.01)
    for r in spec:
        race.speculative.add(r, 0.02)
    ar_html, spec_html = panels(lambda ids: "".join(f"w{i} " for i in ids), race, running=False)
    assert spec_html.count(MARKS["plain"][0]) == 2  # the run "w4 w5 ", and the legend
    assert f'title="{MARKS["plain"][1]}"' in spec_html and MARKS["plain"][0] not in ar_html
    _, speed_fig, _, lengths_fig = figures(race, max_draft=2)
    plain_trace = [t for t in speed_fig.data if t.name == "plain step (no draft)"]
    assert len(plain_trace) == 1 and len(plain_trace[0].x) == 2  # the two plain steps, at their own times
    assert list(plain_trace[0].x) == pytest.approx([0.06, 0.08])  # after 3 and 4 steps of 0.02 s
    plain_bar = [t for t in lengths_fig.data if t.name == "plain steps (no draft)"]
    assert len(plain_bar) == 1 and list(plain_bar[0].y) == [2]
    assert "2 plain steps without a draft" in summary_line(race, greedy=True, running=False)
    race.speculative.records[2:4] = []  # without plain steps, nothing is said or drawn about them
    assert "plain step" not in summary_line(race, greedy=True, running=False)
    assert not [t for t in figures(race, max_draft=2)[1].data if t.name == "plain step (no draft)"]


def test_segments_reassemble_the_decoded_text_exactly():
    words = {1: "Hello", 2: ",", 3: " wor", 4: "ld", 5: "!"}

    def decode(ids):
        return "".join(words[i] for i in ids)

    records = [record(0, "prefill", [1]), record(1, "speculate", [2, 3, 4], drafted=3, accepted=2),
               record(2, "speculate", [5], drafted=1, accepted=0)]
    runs = segments(decode, records)
    assert "".join(text for text, _ in runs) == "Hello, world!"
    assert runs == [("Hello", "full"), (", wor", "draft"), ("ld!", "correction")]


def test_panels_escape_model_text_and_mark_only_the_speculative_side():
    words = {1: "<b>", 2: "x", 3: "y"}
    race = Race(Lane("autoregressive"), Lane("self-speculative"))
    race.autoregressive.add(record(0, "prefill", [1]), 0.1)
    race.speculative.add(record(0, "speculate", [1, 2, 3], drafted=2, accepted=2), 0.1)
    ar_html, spec_html = panels(lambda ids: "".join(words[i] for i in ids), race, running=True)
    assert "&lt;b&gt;" in ar_html and "<b>" not in ar_html
    assert 'title="' not in ar_html and 'title="' in spec_html  # marked tokens carry their source as a title
    assert spec_html.count(MARKS["draft"][0]) == 2  # the run of drafts, and the legend
    assert spec_html.count(MARKS["bonus"][0]) == 2


class FakeClock:
    """Time that passes only when a fake decoder says its step took some."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fake_decoder(step_seconds: float, tokens_per_step: int, steps: int, log: list, name: str,
                 clock: FakeClock | None = None):
    for i in range(steps):
        log.append(name)
        if clock is not None:
            clock.now += step_seconds
        yield record(i, "decode", [i] * tokens_per_step, seconds=step_seconds)


def test_race_steps_the_method_with_less_time_used_and_times_each_step_alone():
    log, clock = [], FakeClock()
    slow = fake_decoder(0.02, 1, 3, log, "slow", clock)
    fast = fake_decoder(0.005, 1, 6, log, "fast", clock)
    states = list(run_race(slow, fast, clock=clock))
    race = states[-1]
    assert race.finished and len(race.autoregressive.records) == 3 and len(race.speculative.records) == 6
    # Always the lane with less time used: slow (0 <= 0), then fast until it has used 0.02 s
    # (4 steps; the tie at 0.02 goes to the first lane), and so on.
    assert log == ["slow", "fast", "fast", "fast", "fast", "slow", "fast", "fast", "slow"]
    assert race.autoregressive.step_seconds == pytest.approx([0.02] * 3)  # each step timed alone
    assert race.speculative.step_seconds == pytest.approx([0.005] * 6)
    assert race.speedup == pytest.approx((6 / 0.03) / (3 / 0.06))


def test_closing_the_race_closes_both_decoders():
    log = []
    a, b = fake_decoder(0.0, 1, 100, log, "a"), fake_decoder(0.0, 1, 100, log, "b")
    race = run_race(a, b)
    next(race), next(race)
    race.close()
    with pytest.raises(StopIteration):
        next(a)
    with pytest.raises(StopIteration):
        next(b)


def test_figures_and_summary_describe_the_race():
    log = []
    race = list(run_race(fake_decoder(0.0, 1, 4, log, "a"),
                         iter([record(0, "prefill", [1]), record(1, "speculate", [2, 3, 4], 3, 2),
                               record(2, "speculate", [5, 6, 7, 8], 3, 3)])))[-1]
    race_fig, speed_fig, acceptance_fig, lengths_fig = figures(race, max_draft=3)
    assert [len(t.x) for t in race_fig.data] == [5, 4]  # origin + one point per step
    assert list(acceptance_fig.data[0].y) == pytest.approx([2 / 3, 1.0])
    assert list(acceptance_fig.data[1].y) == pytest.approx([2 / 3, 5 / 6])
    assert list(lengths_fig.data[0].y) == [0, 0, 1, 1]
    assert len(speed_fig.data) == 2
    line = summary_line(race, greedy=True, running=False)
    assert "acceptance 83% of 6 proposed tokens" in line and "3.50 tokens per verification" in line
    assert "outputs differ ✗" in line  # no divergence computed for it: no explanation to give


# --- the app, launched here (fixtures in conftest.py) ------------------------------------------


def args(prompt, max_new_tokens=SHORT, **overrides):
    values = dict(prompt=prompt, model="SmolLM2-135M-Instruct (embedded default)", profile_file=None,
                  max_new_tokens=max_new_tokens, mode="greedy", temperature=0.7, top_p=0.9, seed=0,
                  max_draft=4, adaptive=True)
    values.update(overrides)
    return values


def test_compare_streams_both_panels_and_ends_with_identical_greedy_outputs(client, solo):
    prompt = "Name three colours of the rainbow."
    job = client.submit(**args(prompt, 16), api_name="/compare")
    job.result(timeout=300)
    updates = job.outputs()
    assert len(updates) >= 3, "expected several streamed updates"
    ar_lengths = [len(u[7]["autoregressive"]["token_ids"]) for u in updates]
    spec_lengths = [len(u[7]["self_speculative"]["token_ids"]) for u in updates]
    assert ar_lengths == sorted(ar_lengths) and spec_lengths == sorted(spec_lengths)
    assert len(set(ar_lengths)) > 1 and len(set(spec_lengths)) > 1, "both panels must grow while streaming"
    assert updates[0][7]["running"] and 0 < ar_lengths[0] < 16
    final = updates[-1]
    ar_html, spec_html, race_plot, speed_plot, acceptance_plot, lengths_plot, summary, result = final
    assert not result["running"] and result["identical"] is True
    assert result["autoregressive"]["token_ids"] == result["self_speculative"]["token_ids"] == solo(prompt, 16)
    assert result["autoregressive"]["tokens_per_second"] > 0 and result["speedup"] > 0
    for plot, title in ((race_plot, "Tokens generated over time"), (speed_plot, "Tokens per second"),
                        (acceptance_plot, "acceptance"), (lengths_plot, "Accepted draft length")):
        assert title in json.dumps(plot), f"chart {title!r} missing"
    assert "outputs identical" in summary and "tok/s" in summary
    assert "Self-speculative" in spec_html and "Autoregressive" in ar_html
    assert result["autoregressive"]["text"].strip()[:5] in ar_html


def test_four_clients_at_once_each_get_their_own_output(client, solo):
    prompts = ["Say hello in Spanish.", "What is 2 + 2?", "Name a fruit.", "Write the word 'blue' twice."]
    with ThreadPoolExecutor(4) as pool:
        jobs = [client.submit(**args(p), api_name="/compare") for p in prompts]
        results = list(pool.map(lambda job: job.result(timeout=600), jobs))
    for prompt, final in zip(prompts, results):
        result = final[7]
        expected = solo(prompt, SHORT)
        assert result["autoregressive"]["token_ids"] == expected, prompt
        assert result["self_speculative"]["token_ids"] == expected, prompt


def test_sampling_runs_are_reproducible_with_a_seed(client):
    a = client.predict(**args("Tell me a fact.", mode="sampling", temperature=0.9, top_p=0.95, seed=7),
                       api_name="/compare")[7]
    b = client.predict(**args("Tell me a fact.", mode="sampling", temperature=0.9, top_p=0.95, seed=7),
                       api_name="/compare")[7]
    assert a["self_speculative"]["token_ids"] == b["self_speculative"]["token_ids"]
    assert a["identical"] is None  # only claimed for greedy decoding


def test_cancelled_run_stops_and_the_next_run_works(client, app_module, solo, race_closed):
    job = client.submit(**args("Write a long story about a dragon.", 400), api_name="/compare")
    next(job)  # the first streamed update
    job.cancel()
    assert race_closed.wait(120), "the cancelled run's decoders were never closed"
    assert not app_module.DEVICE_LOCK.locked(), "the cancelled run still holds the device"
    assert len(job.outputs()[-1][7]["autoregressive"]["token_ids"]) < 400
    prompt = "What is the opposite of hot?"
    result = client.predict(**args(prompt), api_name="/compare")[7]
    assert result["identical"] and result["autoregressive"]["token_ids"] == solo(prompt, SHORT)


@pytest.mark.parametrize("overrides, message", [
    (dict(prompt="   "), "prompt is empty"),
    (dict(prompt="word " * 9000), "context holds"),
    (dict(max_new_tokens=10**9), "greater than maximum value 1024"),  # the slider's own check
    (dict(max_draft=0), "less than minimum value 1"),
    (dict(mode="sampling", temperature=0), "less than minimum value 0.05"),
    (dict(mode="beam search"), "beam search"),
    (dict(model="no-such-org/no-such-model"), "cannot check no-such-org/no-such-model on the Hub"),  # the guard
    (dict(model="not a model id"), "'not a model id' is not a Hub model id"),
    (dict(model="/etc"), "'/etc' is not a Hub model id"),  # a visitor cannot load local paths
])
def test_bad_input_gives_a_clear_message(client, overrides, message):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as error:
        client.predict(**{**args("Hi"), **overrides}, api_name="/compare")
    assert message in str(error.value)
    assert "Traceback" not in str(error.value)


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"num_layers": 12, "attn": [1], "mlp": []}', "this model has 30"),
    ('{"num_layers": 30, "attn": [31], "mlp": []}', "out of range"),
    ('{"num_layers": 30, "attn": [], "mlp": [], "metadata": {"pad": "' + "x" * 70_000 + '"}}', "at most 64 KiB"),
])
def test_bad_profile_upload_gives_a_clear_message(client, tmp_path, content, message):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    path = tmp_path / "profile.json"
    path.write_text(content)
    with pytest.raises(AppError) as error:
        client.predict(**args("Hi", profile_file=handle_file(str(path))), api_name="/compare")
    assert message in str(error.value)


def test_uploaded_profile_is_used(client, tmp_path, solo):
    from gradio_client import handle_file

    path = tmp_path / "profile.json"
    path.write_text('{"num_layers": 30, "attn": [10, 20], "mlp": [15]}')
    prompt = "Name a planet."
    result = client.predict(**args(prompt, profile_file=handle_file(str(path))), api_name="/compare")[7]
    assert result["profile"]["attn"] == [10, 20] and result["profile"]["mlp"] == [15]
    assert result["self_speculative"]["token_ids"] == solo(prompt, SHORT)  # still lossless


def test_default_profile_comes_from_the_hub_module_or_falls_back_to_none(app_module, monkeypatch):
    from selfspec.profiles.hub import ResolvedProfile
    from selfspec.profiles.schema import SkipProfile
    from selfspec.ui import profile_choice

    lm = app_module.get_model(None)
    bundled = SkipProfile(30, attn=(3, 4), mlp=(5,), model=lm.name)
    monkeypatch.setattr(app_module, "_PROFILES", {})
    monkeypatch.setattr(profile_choice, "load_profile",
                        lambda name, layers, model=None: ResolvedProfile(bundled, "bundled", "Using the bundled one."))
    profile, note = app_module.default_profile(lm)
    assert profile == bundled and note.startswith("Using the bundled one.") and "skips 2 attention and 1 MLP" in note

    def unreachable(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(app_module, "_PROFILES", {})
    monkeypatch.setattr(profile_choice, "load_profile", unreachable)
    profile, note = app_module.default_profile(lm)
    assert profile.skipped_sublayers == 0 and "skips no sublayers" in note and "low-bit" in note


def test_form_values_from_api_clients_are_checked():
    form = parse_form(12.0, "sampling", 0.8, 0.95, 3, 6, False)
    assert form.max_new_tokens == 12 and form.sampling.temperature == 0.8 and form.sampling.seed == 3
    assert form.max_draft == 6 and not form.draft_exit
    assert parse_form(5, "greedy", 0.8, 0.95, None, 4, True).sampling.greedy
    for bad, message in [(("many", "greedy", 0.7, 0.9, 0, 4, True), "max new tokens must be a whole number"),
                         ((8, "greedy", 0.7, 0.9, 0, [4], True), "max draft length must be a whole number"),
                         ((8, "sampling", 0.7, 0.9, 1.5, 4, True), "seed must be a whole number"),
                         ((8, "sampling", 0.7, 0.0, 0, 4, True), "top-p must be in (0, 1]")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            parse_form(*bad)


def test_profile_decoding_hints_set_the_exit_rule_unless_exit_is_off():
    from selfspec.engine.settings import DraftSettings
    from selfspec.profiles.schema import SkipProfile

    hinted = SkipProfile(30, attn=(3,), decoding=DraftSettings(max_draft=2, exit="fixed", threshold=0.3))
    exit_on, exit_off = parse_form(8, "greedy", 0, 1, 0, 5, True), parse_form(8, "greedy", 0, 1, 0, 5, False)
    page = dict(draft_weights="auto", controller=True)  # the form's own defaults
    assert exit_on.settings(hinted) == DraftSettings(5, "fixed", 0.3, **page)  # K stays the user's
    assert exit_off.settings(hinted) == DraftSettings(5, "off", 0.3, **page)
    assert exit_on.settings(SkipProfile(30)) == DraftSettings(max_draft=5, **page)  # no hints: adaptive
    no_exit = SkipProfile(30, decoding=DraftSettings(max_draft=2, exit="off"))
    assert exit_on.settings(no_exit).exit == "adaptive"  # the visitor asked for an exit rule


def test_the_draft_weights_and_controller_come_from_the_form_and_start_from_the_deployment_or_profile(monkeypatch):
    from selfspec.engine.settings import DraftSettings
    from selfspec.profiles.schema import SkipProfile
    from selfspec.ui.form import form_defaults

    recommends_int4 = SkipProfile(30, decoding=DraftSettings(draft_weights="int4", controller=False))
    form = parse_form(8, "greedy", 0, 1, 0, 4, True, "int8", False)
    assert form.settings(recommends_int4).draft_weights == "int8"  # the page's choice wins
    assert form.settings(recommends_int4).controller is False
    assert parse_form(8, "greedy", 0, 1, 0, 4, True).settings(recommends_int4).controller is True
    with pytest.raises(ValueError, match="draft weights must be one of auto, full, int8, int4, got 'int3'"):
        parse_form(8, "greedy", 0, 1, 0, 4, True, "int3")
    monkeypatch.delenv("SELFSPEC_DRAFT_WEIGHTS", raising=False)
    assert form_defaults(recommends_int4)["draft_weights"] == "int4"  # the page starts at the profile's
    assert form_defaults(SkipProfile(30)) == {"draft_weights": "auto"}
    monkeypatch.setenv("SELFSPEC_DRAFT_WEIGHTS", "full")  # the deployment's choice, for every model
    assert form_defaults(recommends_int4)["draft_weights"] == "full"
    monkeypatch.setenv("SELFSPEC_DRAFT_WEIGHTS", "int3")
    with pytest.raises(ValueError, match="SELFSPEC_DRAFT_WEIGHTS must be one of"):
        form_defaults(recommends_int4)


def test_a_low_bit_draft_chosen_on_the_page_is_raced_its_memory_shown_and_output_unchanged(client, solo):
    prompt = "Name two oceans."
    final = client.predict(**args(prompt, draft_weights="int8"), api_name="/compare")
    summary, result = final[6], final[7]
    extra = result["draft"]["extra_bytes"]
    assert result["draft"]["weights"] == "int8" and extra > 0
    assert f"{extra / 1e6:.1f} MB ({extra:,} bytes) of low-bit weights" in summary
    assert result["self_speculative"]["token_ids"] == solo(prompt, SHORT)  # fp32: still lossless
    full = client.predict(**args(prompt, draft_weights="full"), api_name="/compare")
    assert full[7]["draft"] == {"weights": "full", "extra_bytes": 0} and "no extra memory" in full[6]


def test_start_up_compiles_every_step_a_default_request_may_run_where_steps_are_compiled(app_module):
    """Compiling happens before the first visitor's race, not in the middle of it (CPU runs eager by
    default, so here the engine is compiled with a backend that only counts)."""
    from selfspec.engine.runtime import Engine
    from selfspec.models.loading import LanguageModel
    from test_bench import CharTokenizer
    from tiny_models import tiny_model

    lm = LanguageModel(tiny_model("llama"), CharTokenizer(), "tiny-llama")
    lm.engine = Engine(lm.model, compile=True, choose_kernels=False,
                       compile_backend=lambda graph, example_inputs: graph.forward)
    app_module.warm_up(lm)
    compiled = lm.engine.describe()["compiled"]
    assert compiled["failed"] is None
    assert {"one token", "verify 3", "verify 5", "verify 9", "verify 13", "verify 17"} <= set(compiled["compile_seconds"])
