"""Searching a skip profile: the paper's Bayesian optimisation, and a much faster greedy method.

Both methods end the same way: the best profile found is timed once more next to plain
autoregressive decoding on the same prompts, so the speedup stored in the profile was measured
in the same run, on the same machine.

- `bayes` (the paper): 2L binary switches, one per sublayer; objective = measured seconds per
  generated token of greedy draft-and-verify on the calibration prompts. Optuna's TPE sampler,
  its state in a journal file, so an interrupted search resumes where it stopped.
- `greedy` (ours): teacher forcing ranks sublayers (ranking.py); then a few prefixes of that order
  are timed end to end and the fastest is kept. Its state is a JSON file next to the profile.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from torch import nn

from selfspec.engine.devices import dtype_name
from selfspec.engine.settings import DraftSettings
from selfspec.models.environment import device_name, library_versions
from selfspec.profiles.measure import Measurement, measure, median, warm_up
from selfspec.profiles.ranking import full_choices, greedy_order, ranking_text
from selfspec.profiles.schema import SearchInfo, SkipProfile, fingerprint, write_profile
from selfspec.profiles.sublayers import sublayer_ids, sublayers_profile

METHODS = ("bayes", "greedy")
AGREEMENT_LEVELS = (0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6, 0.5)
DRAFT_LENGTHS = (2, 3, 4, 6)


@dataclass
@dataclass
class SearchRun:
    """What one search invocation works with, and the best profile found so far (kept on disk)."""

    model: nn.Module
    model_name: str
    prompts: list[list[int]]
    out: Path
    calibration: str = "builtin"
    max_new_tokens: int = 32
    settings: DraftSettings = DraftSettings()
    budget_seconds: float = 900.0
    max_trials: int | None = None
    seed: int = 0
    final_reps: int = 3  # alternating autoregressive/best timings at the end (median)
    progress: bool = True
    method: str = ""
    best: tuple[SkipProfile, Measurement, DraftSettings] | None = None
    trials: int = 0
    seconds_before: float = 0.0  # spent by earlier, interrupted runs of the same search

    def __post_init__(self) -> None:
        self.layers = int(self.model.config.num_hidden_layers)
        self.started = time.monotonic()
        self.deadline = self.started + self.budget_seconds

    def out_of_budget(self) -> bool:
        return time.monotonic() >= self.deadline or (self.max_trials is not None and self.trials >= self.max_trials)

    def seconds(self) -> float:
        return self.seconds_before + time.monotonic() - self.started

    def measure(self, profile: SkipProfile | None, settings: DraftSettings | None = None) -> Measurement:
        return measure(self.model, self.prompts, profile, self.max_new_tokens, settings or self.settings)

    def consider(self, profile: SkipProfile, m: Measurement, settings: DraftSettings | None = None) -> bool:
        """Count one timed trial; keep and save the profile if it is the fastest so far."""
        self.trials += 1
        if self.best is not None and m.seconds_per_token >= self.best[1].seconds_per_token:
            return False
        self.best = (profile, m, settings or self.settings)
        self.save(complete=False)
        return True

    def save(self, complete: bool, baseline: Measurement | None = None) -> SkipProfile:
        """Write the best profile with its search metadata (atomically: always a valid file)."""
        profile, m, settings = self.best
        draft_ratio = (m.draft_seconds_per_token / baseline.seconds_per_token
                       if baseline is not None and m.draft_seconds_per_token else None)
        info = SearchInfo(
            method=self.method, trials=self.trials, seconds=round(self.seconds(), 1), calibration=self.calibration,
            objective=m.seconds_per_token, acceptance=m.acceptance, mean_accepted_tokens=m.mean_accepted_tokens,
            draft_cost_ratio=draft_ratio,
            speedup=baseline.seconds_per_token / m.seconds_per_token if baseline is not None else None,
            device=device_name(self.model), dtype=dtype_name(self.model.dtype),
            versions=library_versions(), date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            complete=complete,
        )
        result = replace(profile, model=self.model_name, decoding=settings, fingerprint=fingerprint(self.model),
                         search=info, metadata={"max_new_tokens": self.max_new_tokens,
                                                "calibration_prompts": len(self.prompts)})
        write_profile(result, self.out)
        return result

    def bar(self, total: int | None):
        from tqdm.auto import tqdm

        return tqdm(total=total, unit="trial", disable=not self.progress, dynamic_ncols=True)

    def show_best(self, bar) -> None:
        if self.best is not None:
            profile, m, _ = self.best
            bar.set_postfix_str(f"best {1000 * m.seconds_per_token:.1f} ms/token, {profile.skipped_sublayers} skipped")


def state_path(out: Path, method: str) -> Path:
    return out.with_name(out.name + f".{method}-state")


def run_search(run: SearchRun, method: str, resume: bool = False) -> SkipProfile:
    """Search, then time the winner next to autoregressive decoding; returns the saved profile."""
    if method not in METHODS:
        raise ValueError(f"unknown search method {method!r}; use one of {', '.join(METHODS)}")
    run.method = method
    state = state_path(run.out, method)
    if state.exists() and not resume:
        state.unlink()  # a fresh search; --resume continues the old one
    warm_up(run.model, run.prompts)
    try:
        (bayes if method == "bayes" else greedy)(run, state)
    except KeyboardInterrupt:
        if run.best is not None:
            run.save(complete=False)
        raise
    if run.best is None:
        raise RuntimeError("the search budget ran out before one profile was timed")
    # Final timing, alternating so that machine noise hits both alike: the stored speedup is from this run.
    profile, _, settings = run.best
    baseline, best = [], []
    for _ in range(run.final_reps):
        baseline.append(run.measure(None))
        best.append(run.measure(profile, settings))
    run.best = (profile, median(best), settings)
    return run.save(complete=True, baseline=median(baseline))

def bayes(run: SearchRun, journal: Path) -> None:
    """The paper's search: Bayesian optimisation (TPE) over 2L binary sublayer switches."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="selfspec", direction="minimize", load_if_exists=True,
        storage=JournalStorage(JournalFileBackend(str(journal))),
        sampler=optuna.samplers.TPESampler(seed=run.seed + len(_done(journal)), n_startup_trials=10),
    )
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    run.trials = len(done)
    run.seconds_before = float(study.user_attrs.get("seconds", 0.0))
    if done:  # resuming: start from the best trial so far (its time is re-measured at the end)
        t = study.best_trial
        run.best = (_profile_from_params(run.layers, t.params), Measurement(t.value, 0), run.settings)
    bar = run.bar(run.max_trials)
    bar.update(run.trials)
    try:
        while not run.out_of_budget():
            trial = study.ask()
            profile = _profile_from_params(run.layers, {
                f"{kind}{i}": trial.suggest_int(f"{kind}{i}", 0, 1) for kind in ("attn", "mlp")
                for i in range(run.layers)})
            try:
                m = run.measure(profile)
            except BaseException:
                study.tell(trial, state=TrialState.FAIL)
                raise
            trial.set_user_attr("acceptance", m.acceptance)
            study.tell(trial, m.seconds_per_token)
            run.consider(profile, m)
            bar.update(1)
            run.show_best(bar)
    finally:
        study.set_user_attr("seconds", run.seconds())
        bar.close()


def _done(journal: Path) -> list[str]:
    return journal.read_text().splitlines() if journal.exists() else []

def _profile_from_params(layers: int, params: dict[str, int]) -> SkipProfile:
    """Optuna's switches (attn0..attnL-1, mlp0..mlpL-1) as a profile."""
    return sublayers_profile(layers, [s for s in range(2 * layers)
                                      if params[f"attn{s}" if s < layers else f"mlp{s - layers}"]])


def greedy(run: SearchRun, state_file: Path) -> None:
    """Ours: teacher-forced greedy elimination, then end-to-end timing of a few prefixes, draft lengths, exit off."""
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    run.seconds_before = state.get("seconds", 0.0)
    started = time.monotonic()

    def save_state() -> None:
        state["seconds"] = run.seconds_before + time.monotonic() - started
        partial = state_file.with_name(state_file.name + ".partial")
        partial.write_text(json.dumps(state))
        partial.replace(state_file)

    bar = run.bar(None)
    try:
        if "order" not in state:
            bar.set_description("ranking sublayers")
            sequences = ranking_text(run.model, run.prompts, run.max_new_tokens)
            targets = full_choices(run.model, sequences)
            # Leave at least 40% of the budget for timing.
            ranking_ends = time.monotonic() + 0.6 * (run.deadline - time.monotonic())
            state["order"] = greedy_order(run.model, sequences, targets, max_sublayers=run.layers,
                                          on_step=lambda chosen, value: bar.update(1),
                                          stop=lambda: time.monotonic() > ranking_ends)
            save_state()
        bar.set_description("timing prefixes")
        timed = state.setdefault("timed", {})

        def time_one(chosen: list[int], max_draft: int, exit: str = run.settings.exit) -> None:
            key = f"{sorted(chosen)}@{max_draft}" + ("" if exit == run.settings.exit else f"/{exit}")
            settings = replace(run.settings, max_draft=max_draft, exit=exit)
            profile = sublayers_profile(run.layers, chosen)
            m = Measurement(**timed[key]) if key in timed else run.measure(profile, settings)
            timed[key] = m.__dict__
            save_state()
            run.consider(profile, m, settings)
            bar.update(1)
            run.show_best(bar)

        for chosen in [[], *_prefixes(state["order"])]:  # skipping nothing is a candidate too
            if run.out_of_budget():
                return
            time_one(chosen, run.settings.max_draft)
        if run.best is None:
            return
        # Then the draft length for the fastest prefix, then whether its adaptive exit pays: with high
        # acceptance, stopping a draft early only adds verifications.
        best = sublayer_ids(run.best[0])
        for k in DRAFT_LENGTHS:
            if k != run.settings.max_draft and not run.out_of_budget():
                time_one(best, k)
        if run.settings.exit != "off" and not run.out_of_budget():
            time_one(best, run.best[2].max_draft, "off")
    finally:
        bar.close()

def _prefixes(order: list[tuple[list[int], float]]) -> list[list[int]]:
    """The longest prefix of the elimination order at each agreement level (distinct ones)."""
    out: list[list[int]] = []
    for level in AGREEMENT_LEVELS:
        fitting = [chosen for chosen, value in order if value >= level]
        if fitting and fitting[-1] not in out:
            out.append(fitting[-1])
    return out
