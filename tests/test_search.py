"""Skip-set search on a tiny random model: valid profiles, resume, Ctrl-C, and the greedy ranking's quality."""

import random

import pytest

from selfspec.calibration import CalibrationError, builtin_prompts, read_calibration
from selfspec.cli import main
from selfspec.profile import fingerprint, read_profile
from selfspec.search import (
    SearchRun,
    agreement,
    continuations,
    full_choices,
    greedy_order,
    random_profile,
    run_search,
    state_path,
    sublayer_ids,
    sublayers_profile,
)
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
    import selfspec.search as search

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
