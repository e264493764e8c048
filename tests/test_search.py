"""Skip-set search on a tiny random model: valid profiles, resume, Ctrl-C, and the greedy ranking's quality."""

import json
import random

import pytest

from selfspec.profiles.calibration import CalibrationError, builtin_prompts, read_calibration
from selfspec.cli import main
from selfspec.engine.draft import DraftModel
from selfspec.engine.settings import DraftSettings
from selfspec.profiles.paired import paired, sign_test
from selfspec.profiles.schema import SkipProfile, fingerprint, read_profile
from selfspec.profiles.measure import compare
from selfspec.profiles.ranking import agreement, continuations, full_choices, greedy_order
from selfspec.profiles.search import SearchRun, run_search, state_path
from selfspec.profiles.search_report import comparison_table, paired_table, weights_reason
from selfspec.profiles.sublayers import random_profile, sublayer_ids, sublayers_profile
from selfspec.engine.lowbit import DRAFT_WEIGHTS
from selfspec.profiles.draft_weights import model_bytes
from tiny_models import tiny_model

LAYERS = 6


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama", num_hidden_layers=LAYERS)


@pytest.fixture(scope="module")
def prompts():
    rng = random.Random(0)
    return [[rng.randrange(2, 96) for _ in range(10)] for _ in range(3)]


def new_run(model, prompts, out, **kw):
    """A short search; the paper's full-weight draft only unless `weights` says otherwise (fewer timings)."""
    kw = {"max_new_tokens": 12, "budget_seconds": 60, "final_reps": 1, "progress": False, "weights": ("full",), **kw}
    return SearchRun(model, "tiny/llama", prompts, out, **kw)


@pytest.mark.parametrize("method", ["greedy", "bayes"])
def test_search_writes_a_valid_measured_profile(model, prompts, tmp_path, method):
    out = tmp_path / "p.json"
    profile = run_search(new_run(model, prompts, out, max_trials=4, weights=DRAFT_WEIGHTS), method)
    saved = read_profile(out)
    assert saved.to_dict() == profile.to_dict()
    assert saved.model == "tiny/llama" and saved.num_layers == LAYERS
    assert saved.fingerprint == fingerprint(model)
    s = saved.search
    assert s.method == method and s.complete and s.trials == 4
    assert s.objective > 0 and s.speedup > 0 and s.seconds > 0 and s.calibration == "builtin"
    assert s.device and s.dtype == "float32" and "torch" in s.versions
    assert saved.decoding.draft_weights in DRAFT_WEIGHTS and saved.decoding.draft_weights in s.weights
    saved.check_model(model)


def test_bayes_resumes_where_it_stopped(model, prompts, tmp_path):
    out = tmp_path / "p.json"
    run_search(new_run(model, prompts, out, max_trials=3), "bayes")
    journal = state_path(out, "bayes")
    assert journal.exists()
    resumed = run_search(new_run(model, prompts, out, max_trials=5), "bayes", resume=True)
    assert resumed.search.trials == 5  # 3 from the first run, 2 more
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(study_name="selfspec", storage=JournalStorage(JournalFileBackend(str(journal))))
    assert len(study.trials) == 5
    # Without --resume the same --out starts afresh.
    fresh = run_search(new_run(model, prompts, out, max_trials=2), "bayes")
    assert fresh.search.trials == 2


def test_greedy_resume_reuses_its_ranking(model, prompts, tmp_path, monkeypatch):
    out = tmp_path / "p.json"
    run_search(new_run(model, prompts, out, max_trials=2), "greedy")
    import selfspec.profiles.search as search

    monkeypatch.setattr(search, "greedy_order", lambda *a, **k: pytest.fail("ranking recomputed"))
    resumed = run_search(new_run(model, prompts, out, max_trials=3), "greedy", resume=True)
    assert resumed.search.trials == 3


@pytest.mark.parametrize("method", ["greedy", "bayes"])
def test_ctrl_c_leaves_a_valid_partial_profile(model, prompts, tmp_path, method):
    out = tmp_path / "p.json"
    run = new_run(model, prompts, out)
    calls = 0
    real = run.measure

    def measure(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    run.measure = measure
    with pytest.raises(KeyboardInterrupt):
        run_search(run, method)
    partial = read_profile(out)
    assert partial.search.complete is False and partial.search.trials >= 1
    assert partial.search.method == method


def test_greedy_ranking_beats_random_profiles_of_the_same_size(model, prompts):
    sequences = [p + c for p, c in zip(prompts, continuations(model, prompts, 20))]
    targets = full_choices(model, sequences)
    order = greedy_order(model, sequences, targets, max_sublayers=4, floor=0.0)
    assert [len(chosen) for chosen, _ in order] == [1, 2, 3, 4]
    rng = random.Random(0)
    for chosen, value in order:
        assert value == pytest.approx(agreement(model, sequences, targets, sublayers_profile(LAYERS, chosen)))
        controls = [agreement(model, sequences, targets, random_profile(LAYERS, len(chosen), rng))
                    for _ in range(8)]
        assert value > sum(controls) / len(controls), (chosen, value, controls)
        assert value >= max(controls) - 0.05


def test_sublayer_ids_round_trip():
    profile = sublayers_profile(LAYERS, [0, 5, 6, 11])
    assert profile.attn == (0, 5) and profile.mlp == (0, 5)
    assert sorted(sublayer_ids(profile)) == [0, 5, 6, 11]
    assert random_profile(LAYERS, 7, random.Random(1)).skipped_sublayers == 7


def test_calibration_files(tmp_path):
    assert len(builtin_prompts()) >= 6
    text = tmp_path / "c.txt"
    text.write_text("first prompt\nstill first\n\nsecond\n\n\n")
    assert read_calibration(text) == ["first prompt\nstill first", "second"]
    js = tmp_path / "c.json"
    js.write_text('["a", "b"]')
    assert read_calibration(js) == ["a", "b"]
    js.write_text('{"a": 1}')
    with pytest.raises(CalibrationError, match="JSON list of strings"):
        read_calibration(js)
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(CalibrationError, match="no prompts"):
        read_calibration(tmp_path / "empty.txt")


def test_search_command_reports_bad_input_in_one_line(tmp_path, capsys):
    assert main(["search", "--calibration", str(tmp_path / "none.txt")]) == 2
    assert capsys.readouterr().err.strip().startswith("error: cannot read calibration file")
    assert main(["search", "--budget-minutes", "0"]) == 2
    assert "budget-minutes must be positive" in capsys.readouterr().err
    (tmp_path / "a-file").write_text("")
    assert main(["search", "--out", str(tmp_path / "a-file" / "p.json")]) == 2  # before loading any model
    assert capsys.readouterr().err.strip().startswith(f"error: cannot write the profile in {tmp_path / 'a-file'}")


def test_greedy_order_is_completed_from_the_single_ranking_when_time_runs_out(model, prompts):
    sequences = [p + c for p, c in zip(prompts, continuations(model, prompts, 12))]
    targets = full_choices(model, sequences)
    order = greedy_order(model, sequences, targets, max_sublayers=5, floor=0.0, stop=lambda: True)
    assert [len(chosen) for chosen, _ in order] == [1, 2, 3, 4, 5]
    values = [value for _, value in order]
    assert values == sorted(values, reverse=True) and 0 < values[-1] <= values[0] <= 1


def test_greedy_also_times_its_best_profile_without_early_exit(model, prompts, tmp_path):
    out = tmp_path / "p.json"
    run_search(new_run(model, prompts, out), "greedy")  # no trial limit: the tiny model finishes in budget
    timed = json.loads(state_path(out, "greedy").read_text())["timed"]
    assert sum(key.endswith("/off") for key in timed) == 1
    assert read_profile(out).decoding.exit in ("adaptive", "off")


def test_greedy_times_every_skip_set_with_every_draft_weights_and_keeps_the_fastest(model, prompts, tmp_path):
    out = tmp_path / "p.json"
    run = new_run(model, prompts, out, weights=DRAFT_WEIGHTS, final_reps=2)
    timings = []  # (weights, skipped sublayers, seconds per token) of every end-to-end timing
    real = run.measure

    def measure(profile, settings=None):
        m = real(profile, settings)
        if profile is not None:
            timings.append((settings.draft_weights, sublayer_ids(profile), m.seconds_per_token))
        return m

    run.measure = measure
    profile = run_search(run, "greedy")
    order = json.loads(state_path(out, "greedy").read_text())["order"]
    skip_sets = [sorted(chosen) for chosen in [[], *(c for c, _ in order)]]
    for weights in DRAFT_WEIGHTS:  # skipping nothing and at least one prefix, with each weights
        tried = [sorted(ids) for w, ids, _ in timings if w == weights]
        assert [] in tried and any(ids in skip_sets and ids for ids in tried), weights
    figures = profile.search.weights
    assert set(figures) == set(DRAFT_WEIGHTS)
    chosen = profile.decoding.draft_weights
    # The chosen weights are the fastest of the final timings (median: the lower of 2), the run's last 2 x 3.
    final = {}
    for weights, _, seconds in timings[-6:]:
        final.setdefault(weights, []).append(seconds)
    medians = {w: min(t) for w, t in final.items()}
    assert chosen == min(medians, key=medians.get)
    assert figures[chosen]["seconds_per_token"] == pytest.approx(medians[chosen])
    assert profile.search.speedup == pytest.approx(figures[chosen]["speedup"])
    assert figures["full"]["extra_bytes"] == 0 < figures["int4"]["extra_bytes"] < figures["int8"]["extra_bytes"]
    for f in figures.values():
        assert 0 <= f["acceptance"] <= 1 and 0 <= f["predicted_acceptance"] <= 1
        assert f["c"] > 0 and f["predicted_speedup"] > 0 and f["speedup"] > 0
    assert read_profile(out).search.weights == figures  # written with the profile


def test_weights_over_the_memory_budget_are_not_searched_and_say_so(model, prompts, tmp_path):
    out = tmp_path / "p.json"
    int4_bytes = DraftModel(model, SkipProfile.none(LAYERS), weights="int4").extra_bytes
    run = new_run(model, prompts, out, weights=DRAFT_WEIGHTS, budget_bytes=int4_bytes, max_trials=2)
    assert list(run.drafts) == ["full", "int4"] and list(run.over_budget) == ["int8"]
    profile = run_search(run, "greedy")
    assert profile.search.weights["int8"]["note"] == f"over the memory budget of {int4_bytes} bytes"
    assert profile.decoding.draft_weights in ("full", "int4")
    assert "int8 not tried: over the memory budget" in weights_reason(profile.search.weights,
                                                                      profile.decoding.draft_weights)
    with pytest.raises(ValueError, match="no draft weights fit the memory budget of 0 bytes"):
        new_run(model, prompts, out, weights=("int8",), budget_bytes=0)
    with pytest.raises(ValueError, match="must be some of full, int8, int4"):
        new_run(model, prompts, out, weights=("int3",))
    assert SearchRun(model, "m", prompts, out, progress=False).budget_bytes == model_bytes(model) // 2


def test_search_command_explains_the_draft_weights_it_chose(tmp_path, capsys, monkeypatch):
    from tiny_models import save_tiny

    monkeypatch.setenv("SELFSPEC_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "profiles" / "p.json"  # a folder that does not exist yet: made
    calibration = tmp_path / "c.json"
    calibration.write_text('["a short prompt", "another prompt here"]')
    assert main(["search", "--model", str(save_tiny(tmp_path / "m")), "--dtype", "float32", "--device", "cpu",
                 "--calibration", str(calibration), "--max-trials", "3", "--max-new-tokens", "6",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    chosen = read_profile(out).decoding.draft_weights
    assert f"draft weights {chosen}: fastest in the final timing" in printed
    for weights in DRAFT_WEIGHTS:
        assert f"| {weights}" in printed or f"| **{weights}** (chosen)" in printed
    assert "predicted speedup" in printed and " MB (" in printed


def test_sign_test_matches_the_binomial_tails():
    assert sign_test(10, 0) == pytest.approx(2 / 2 ** 10)
    assert sign_test(0, 10) == sign_test(10, 0)
    assert sign_test(3, 3) == 1.0 and sign_test(0, 0) == 1.0
    assert sign_test(8, 2) == pytest.approx(2 * (1 + 10 + 45) / 2 ** 10)


def test_paired_comparison_separates_a_real_gain_from_noise():
    rng = random.Random(0)
    control = [rng.uniform(0.05, 0.2) for _ in range(30)]  # load changes from pair to pair
    faster = [t / 1.1 * rng.uniform(0.98, 1.02) for t in control]
    gain = paired(faster, control)
    assert gain.wins == gain.pairs == 30 and gain.p_value < 1e-6
    assert 1 < gain.low <= gain.speedup <= gain.high and gain.speedup == pytest.approx(1.1, rel=0.02)
    # As often 3% faster as 3% slower: no gain, whatever the load.
    same = paired([t * (1.03 if i % 2 else 1 / 1.03) for i, t in enumerate(control)], control)
    assert same.wins == 15 and same.p_value == 1.0 and same.low < 1 < same.high
    assert same.speedup == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same, non-zero count"):
        paired([0.1, 0.2], [0.1])


def test_compare_keeps_every_prompt_of_every_rep_for_paired_tables(model, prompts):
    none = SkipProfile.none(LAYERS)
    candidates = {"autoregressive": (None, DraftSettings()), "skip nothing": (none, DraftSettings()),
                  "random": (random_profile(LAYERS, 3, random.Random(0)), DraftSettings(max_draft=2, exit="off"))}
    results = compare(model, prompts, candidates, 8, reps=2)
    assert list(results) == list(candidates) and all(len(ms) == 2 for ms in results.values())
    for ms in results.values():
        for m in ms:
            assert len(m.prompt_seconds_per_token) == len(prompts)
            # The whole run's time per token is a token-weighted mean of the prompts' own.
            assert min(m.prompt_seconds_per_token) <= m.seconds_per_token * (1 + 1e-9)
            assert m.seconds_per_token <= max(m.prompt_seconds_per_token) * (1 + 1e-9)
    table = comparison_table(results).splitlines()
    assert len(table) == 2 + len(candidates) and "| autoregressive |" in table[2] and "1.00x" in table[2]
    rows = paired_table(results, ["random"], ["autoregressive", "random", "skip nothing"]).splitlines()[2:]
    assert [row.split(" | ")[:2] for row in rows] == [["| random", "autoregressive"], ["| random", "skip nothing"]]
    assert all(f"/{2 * len(prompts)} |" in row for row in rows)
