import json
import time

import pytest
import torch

from selfspec.engine.kernels import choose_fastest

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("quiet_machine")


@pytest.fixture
def steady_timings(monkeypatch):
    """Sleeps of a few ms count as steady whatever else runs (the scattered case is tested on its own)."""
    import selfspec.engine.kernels as kernels

    monkeypatch.setattr(kernels, "steady", lambda samples: True)


def sleeper(seconds):
    return lambda: time.sleep(seconds)


def test_picks_the_candidate_that_takes_less_time(tmp_path):
    # 20 ms against nothing: a margin no scheduler noise on the median closes.
    choice = choose_fastest("k", {"slow": sleeper(0.02), "fast": sleeper(0)}, CPU, repeats=3, rounds=1,
                            cache_file=tmp_path / "k.json")
    assert choice.name == "fast" and not choice.cached
    assert choice.milliseconds["slow"] > 15 > choice.milliseconds["fast"]


def test_a_choice_cached_against_another_build_of_the_engines_kernels_is_measured_again(tmp_path, steady_timings,
                                                                                        monkeypatch):
    import selfspec.engine.kernels as kernels

    cache, calls = tmp_path / "k.json", []
    candidates = {"a": lambda: calls.append("a"), "b": sleeper(0.005)}
    monkeypatch.setattr(kernels, "source_digest", lambda: "0123456789ab")
    assert not choose_fastest("shape", candidates, CPU, repeats=2, rounds=1, cache_file=cache).cached
    assert choose_fastest("shape", candidates, CPU, repeats=2, rounds=1, cache_file=cache).cached
    monkeypatch.setattr(kernels, "source_digest", lambda: "ba9876543210")  # the C++ sources changed
    n = len(calls)
    assert not choose_fastest("shape", candidates, CPU, repeats=2, rounds=1, cache_file=cache).cached
    assert len(calls) > n


def test_a_candidate_that_fails_is_left_out(tmp_path):
    def broken():
        raise NotImplementedError("this build lacks the kernel")

    choice = choose_fastest("k", {"broken": broken, "slow": sleeper(0.001)}, CPU, repeats=2, rounds=1,
                            cache_file=tmp_path / "k.json")
    assert choice.name == "slow" and set(choice.milliseconds) == {"slow"}
    with pytest.raises(RuntimeError, match="no candidate"):
        choose_fastest("k2", {"broken": broken}, CPU, cache_file=tmp_path / "k.json")


def test_the_choice_is_cached_per_key_and_a_damaged_cache_is_measured_again(tmp_path, steady_timings):
    cache = tmp_path / "k.json"
    calls = []
    candidates = {"a": lambda: calls.append("a"), "b": sleeper(0.005)}
    first = choose_fastest("shape-1", candidates, CPU, repeats=2, rounds=1, cache_file=cache)
    n = len(calls)
    again = choose_fastest("shape-1", candidates, CPU, repeats=2, rounds=1, cache_file=cache)
    assert again.cached and again.name == first.name == "a" and len(calls) == n  # nothing ran
    other = choose_fastest("shape-2", candidates, CPU, repeats=2, rounds=1, cache_file=cache)
    assert not other.cached and len(calls) > n
    assert len(json.loads(cache.read_text())) == 2
    cache.write_text("{not json")
    assert not choose_fastest("shape-1", candidates, CPU, repeats=2, rounds=1, cache_file=cache).cached


def test_a_candidate_new_since_the_cached_choice_is_measured(tmp_path, steady_timings):
    """A kernel added after a choice was cached (a new release) must get its chance on that machine; one that
    failed to run when the choice was made does not make every later process measure again."""
    cache = tmp_path / "k.json"
    calls = []
    def missing():  # a kernel this build lacks
        raise RuntimeError("not on this machine")

    old = {"a": sleeper(0.004), "b": sleeper(0.008), "missing": missing}
    first = choose_fastest("shape", old, CPU, repeats=2, rounds=1, cache_file=cache)
    assert first.name == "a" and not first.cached
    assert choose_fastest("shape", old, CPU, repeats=2, rounds=1, cache_file=cache).cached
    grown = old | {"new": lambda: calls.append("new")}
    remeasured = choose_fastest("shape", grown, CPU, repeats=2, rounds=1, cache_file=cache)
    assert not remeasured.cached and remeasured.name == "new" and "new" in calls
    assert choose_fastest("shape", grown, CPU, repeats=2, rounds=1, cache_file=cache).name == "new"


def test_an_incumbent_keeps_its_place_unless_beaten_by_the_margin(tmp_path):
    # 10 ms against 8 ms: 20% faster. A 10% margin lets it win, a 50% margin does not.
    candidates = {"usual": sleeper(0.010), "other": sleeper(0.008)}
    wins = choose_fastest("m1", candidates, CPU, repeats=3, rounds=1, cache_file=tmp_path / "k.json",
                          incumbent="usual", margin=0.1)
    keeps = choose_fastest("m2", candidates, CPU, repeats=3, rounds=1, cache_file=tmp_path / "k.json",
                           incumbent="usual", margin=0.5)
    assert wins.name == "other" and keeps.name == "usual"


def alternating(*seconds):
    calls = iter(range(10**6))
    return lambda: time.sleep(seconds[next(calls) % len(seconds)])


def test_scattered_timings_are_used_but_not_cached(tmp_path, monkeypatch):
    # One candidate takes 1 ms or 30 ms by turns: its median means little, so the choice holds for
    # this process only and the next one measures again.
    import selfspec.engine.kernels as kernels

    cache = tmp_path / "k.json"
    timed = []
    candidates = {"erratic": alternating(0.001, 0.03), "steady": lambda: timed.append(1) or time.sleep(0.002)}
    first = choose_fastest("noisy", candidates, CPU, repeats=6, rounds=1, cache_file=cache)
    assert not first.trusted and not cache.exists()
    before = len(timed)
    again = choose_fastest("noisy", candidates, CPU, repeats=6, rounds=1, cache_file=cache)
    # The same process keeps its choice, untimed: a model loaded twice computes the same way twice.
    assert again.name == first.name and again.cached and len(timed) == before
    monkeypatch.setattr(kernels, "_untrusted_here", {})  # what a new process starts with
    assert not choose_fastest("noisy", candidates, CPU, repeats=6, rounds=1, cache_file=cache).cached
    assert len(timed) > before


def test_a_choice_measured_on_a_busy_machine_is_not_cached(tmp_path, monkeypatch, steady_timings):
    import selfspec.engine.kernels as kernels

    cache = tmp_path / "k.json"
    candidates = {"slow": sleeper(0.01), "fast": sleeper(0)}
    monkeypatch.setattr(kernels.os, "getloadavg", lambda: (64.0, 64.0, 64.0))
    busy = choose_fastest("busy", candidates, CPU, repeats=3, rounds=1, cache_file=cache)
    assert busy.name == "fast" and not busy.trusted and not cache.exists()
    monkeypatch.setattr(kernels.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    monkeypatch.setattr(kernels, "_untrusted_here", {})  # the next process, on a quiet machine
    quiet = choose_fastest("busy", candidates, CPU, repeats=3, rounds=1, cache_file=cache)
    assert quiet.trusted and not quiet.cached and json.loads(cache.read_text())
    assert choose_fastest("busy", candidates, CPU, repeats=3, rounds=1, cache_file=cache).cached


def test_the_cache_file_is_parsed_once_until_it_is_replaced(tmp_path, monkeypatch):
    import selfspec.engine.kernels as kernels
    from selfspec.engine.kernels import KernelChoice, cached_choice, remember_choice

    cache = tmp_path / "k.json"
    remember_choice(KernelChoice("shape-1", "a"), CPU, cache)
    parses = []
    loads = kernels.json.loads
    monkeypatch.setattr(kernels.json, "loads", lambda text: parses.append(text) or loads(text))
    assert [cached_choice("shape-1", CPU, cache).name for _ in range(3)] == ["a"] * 3
    assert len(parses) == 1
    remember_choice(KernelChoice("shape-1", "b"), CPU, cache)  # replaces the file, as another process's write does
    assert cached_choice("shape-1", CPU, cache).name == "b"


class FakeClock:
    """Time that passes only when a candidate says so: exact timings, whatever else the machine runs."""

    def __init__(self, monkeypatch):
        import selfspec.engine.kernels as kernels

        self.now, self.calls = 0.0, {}
        monkeypatch.setattr(kernels.time, "perf_counter", lambda: self.now)

    def candidate(self, name, seconds):
        """Takes seconds[0], seconds[1], ... by turns (the warm-up takes the first)."""
        self.calls[name] = 0

        def run():
            self.calls[name] += 1
            self.now += seconds[(self.calls[name] - 1) % len(seconds)]
        return run


def test_a_candidate_far_slower_in_its_first_samples_is_timed_no_more(tmp_path, monkeypatch):
    # 30 ms against 2 ms twice: more samples of the slow one cannot change the choice, only cost time;
    # one that is slow once and fastest once stays in (it may be the fastest, or erratic), and while its
    # samples overlap the fastest's, every sample is taken.
    clock = FakeClock(monkeypatch)
    candidates = {"slow": clock.candidate("slow", [0.03]), "fast": clock.candidate("fast", [0.002]),
                  "once": clock.candidate("once", [0.002, 0.03, 0.001])}  # warm-up, slow, fastest of all
    choice = choose_fastest("prune", candidates, CPU, repeats=6, rounds=1, cache_file=tmp_path / "k.json")
    assert choice.name in ("fast", "once") and "slow" in choice.milliseconds
    assert clock.calls == {"slow": 3, "fast": 7, "once": 7}  # warm-up + 2, or warm-up + all 6
    assert not choice.trusted  # "once" scatters: 1 ms or 30 ms


@pytest.mark.parametrize("incumbent, margin, expected", [(None, 0.0, "quick"), ("usual", 0.5, "usual")])
def test_samples_that_do_not_overlap_settle_the_choice_after_the_first_two(tmp_path, monkeypatch, incumbent,
                                                                           margin, expected):
    # 10-11 ms against 13-14 ms: within the contender ratio, so both are timed twice; then the slower one
    # at its best is still slower than the other at its worst (or, with a 50% margin, the usual one stays
    # even at its worst), and no more samples are taken.
    clock = FakeClock(monkeypatch)
    candidates = {"usual": clock.candidate("usual", [0.014, 0.013]),
                  "quick": clock.candidate("quick", [0.011, 0.010])}
    choice = choose_fastest(f"settle-{expected}", candidates, CPU, repeats=7, rounds=3, incumbent=incumbent,
                            margin=margin, cache_file=tmp_path / "k.json")
    assert choice.name == expected and clock.calls == {"usual": 3, "quick": 3}
    assert choice.trusted and choice.milliseconds == {"usual": 13.5, "quick": 10.5}


def test_overlapping_samples_are_all_taken(tmp_path, monkeypatch):
    clock = FakeClock(monkeypatch)
    candidates = {"usual": clock.candidate("usual", [0.010, 0.013]), "quick": clock.candidate("quick", [0.011])}
    choose_fastest("overlap", candidates, CPU, repeats=3, rounds=2, cache_file=tmp_path / "k.json")
    assert clock.calls == {"usual": 7, "quick": 7}  # warm-up + 6


def test_warm_ups_run_instead_of_the_candidates_first_call(tmp_path, monkeypatch):
    clock, warmed = FakeClock(monkeypatch), []
    candidates = {"a": clock.candidate("a", [0.002]), "b": clock.candidate("b", [0.004])}
    choose_fastest("warm", candidates, CPU, repeats=2, rounds=1, cache_file=tmp_path / "k.json",
                   warm_ups={"a": lambda: warmed.append("a"), "b": lambda: warmed.append("b")})
    assert warmed == ["a", "b"] and clock.calls == {"a": 2, "b": 2}
