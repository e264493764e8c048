"""Skip-set search on a tiny random model: valid profiles, resume, Ctrl-C, and the greedy ranking's quality."""

import json
import random

import pytest

from selfspec.profiles.calibration import CalibrationError, builtin_prompts, read_calibration
from selfspec.cli import main
from selfspec.engine.settings import DraftSettings
from selfspec.profiles.paired import paired, sign_test
from selfspec.profiles.schema import SkipProfile, fingerprint, read_profile
from selfspec.profiles.measure import compare
from selfspec.profiles.ranking import agreement, continuations, full_choices, greedy_order
from selfspec.profiles.search import SearchRun, run_search, state_path
from selfspec.profiles.search_report import comparison_table, paired_table
from selfspec.profiles.sublayers import random_profile, sublayer_ids, sublayers_profile
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
    kw = {"max_new_tokens": 12, "budget_seconds": 60, "final_reps": 1, "progress": False, **kw}
    return SearchRun(model, "tiny/llama", prompts, out, **kw)


@pytest.mark.parametrize("method", ["greedy", "bayes"])
def test_search_writes_a_valid_measured_profile(model, prompts, tmp_path, method):
    out = tmp_path / "p.json"
    profile = run_search(new_run(model, prompts, out, max_trials=4), method)
    saved = read_profile(out)
    assert saved.to_dict() == profile.to_dict()
    assert saved.model == "tiny/llama" and saved.num_layers == LAYERS
    assert saved.fingerprint == fingerprint(model)
    s = saved.search
    assert s.method == method and s.complete and s.trials == 4
    assert s.objective > 0 and s.speedup > 0 and s.seconds > 0 and s.calibration == "builtin"
    assert s.device and s.dtype == "float32" and "torch" in s.versions
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
