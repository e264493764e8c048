"""Searching a skip profile: the paper's Bayesian optimisation, and a much faster greedy method.

Both methods end the same way: the best profile found is timed once more next to plain
autoregressive decoding on the same prompts, so the speedup stored in the profile was measured
in the same run, on the same machine.

- `bayes` (the paper): 2L binary switches, one per sublayer; objective = measured seconds per
  generated token of greedy draft-and-verify on the calibration prompts. Optuna's TPE sampler,
  its state in a journal file, so an interrupted search resumes where it stopped.
- `greedy` (ours): teacher forcing ranks sublayers (ranking.py); then a few prefixes of that order
  are timed end to end and the fastest is kept. Its state is a JSON file next to the profile.

Both search the draft weights with the sublayers: every skip set is timed with each of `full`, `int8`
and `int4` that fits the memory budget (bayes: one more switch). The fastest of each weights is timed
again at the end, side by side; the fastest of those is the profile written (its `decoding.draft_weights`),
and `search.weights` keeps, per weights, the measured speed and the cost model's prediction (c, acceptance),
so the choice can be explained.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

from selfspec.engine.devices import dtype_name
from selfspec.engine.draft import DraftModel
from selfspec.engine.lowbit import DRAFT_WEIGHTS
from selfspec.engine.settings import DraftSettings
from selfspec.models.environment import device_name, library_versions
from selfspec.profiles.draft_weights import calibration_sequence, model_bytes, rank
from selfspec.profiles.measure import Measurement, measure, median, warm_up
from selfspec.profiles.ranking import full_choices, greedy_order, ranking_text
from selfspec.profiles.schema import SearchInfo, SkipProfile, fingerprint, write_profile
from selfspec.profiles.sublayers import sublayer_ids, sublayers_profile

METHODS = ("bayes", "greedy")
AGREEMENT_LEVELS = (0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6, 0.5)
DRAFT_LENGTHS = (2, 3, 4, 6)


Best = tuple[SkipProfile, Measurement, DraftSettings]  # a timed candidate: its draft weights are in the settings


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
    weights: tuple[str, ...] = DRAFT_WEIGHTS  # draft weights searched, those within `budget_bytes`
    budget_bytes: int | None = None  # most memory low-bit weights may add (None: half the model's)
    method: str = ""
    best: Best | None = None
    trials: int = 0
    seconds_before: float = 0.0  # spent by earlier, interrupted runs of the same search

    def __post_init__(self) -> None:
        self.layers = int(self.model.config.num_hidden_layers)
        unknown = [w for w in self.weights if w not in DRAFT_WEIGHTS]
        if unknown or not self.weights:
            raise ValueError(f"the search's draft weights must be some of {', '.join(DRAFT_WEIGHTS)}; got {list(self.weights)}")
        if self.budget_bytes is None:
            self.budget_bytes = model_bytes(self.model) // 2
        # One draft per weights, built once: each skip set reads the same low-bit copies (with_profile).
        nothing = SkipProfile.none(self.layers)
        self.drafts: dict[str, DraftModel] = {}
        self.over_budget: dict[str, int] = {}  # weights -> the bytes they would add
        for weights in dict.fromkeys(self.weights):
            draft = DraftModel(self.model, nothing, weights=weights)
            if draft.extra_bytes > self.budget_bytes:
                self.over_budget[weights] = draft.extra_bytes
            else:
                self.drafts[weights] = draft
        if not self.drafts:
            raise ValueError(f"no draft weights fit the memory budget of {self.budget_bytes} bytes: "
                             + ", ".join(f"{w} adds {b}" for w, b in self.over_budget.items()))
        if self.settings.draft_weights not in self.drafts:  # e.g. None: the first weights searched
            self.settings = replace(self.settings, draft_weights=next(iter(self.drafts)))
        self.best_by_weights: dict[str, Best] = {}
        self.weights_figures: dict[str, dict] | None = None  # set by the final timing
        self.started = time.monotonic()
        self.deadline = self.started + self.budget_seconds

    def out_of_budget(self) -> bool:
        return time.monotonic() >= self.deadline or (self.max_trials is not None and self.trials >= self.max_trials)

    def seconds(self) -> float:
        return self.seconds_before + time.monotonic() - self.started

    def measure(self, profile: SkipProfile | None, settings: DraftSettings | None = None) -> Measurement:
        """Time autoregressive decoding (profile None) or the draft of `settings.draft_weights` skipping `profile`."""
        settings = settings or self.settings
        draft = None if profile is None else self.drafts[settings.draft_weights].with_profile(profile)
        return measure(self.model, self.prompts, draft, self.max_new_tokens, settings)

    def consider(self, profile: SkipProfile, m: Measurement, settings: DraftSettings | None = None) -> bool:
        """Count one timed trial; keep the fastest of its weights, and save it if it is the fastest so far."""
        settings = settings or self.settings
        self.trials += 1
        kept = self.best_by_weights.get(settings.draft_weights)
        if kept is None or m.seconds_per_token < kept[1].seconds_per_token:
            self.best_by_weights[settings.draft_weights] = (profile, m, settings)
        if self.best is not None and m.seconds_per_token >= self.best[1].seconds_per_token:
            return False
        self.best = (profile, m, settings)
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
            complete=complete, weights=self.weights_figures if complete else None,
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
            profile, m, settings = self.best
            bar.set_postfix_str(f"best {1000 * m.seconds_per_token:.1f} ms/token, {profile.skipped_sublayers} skipped, "
                                f"{settings.draft_weights} weights")


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
    # Final timing of the fastest candidate of each draft weights, alternating with autoregressive decoding
    # so that machine noise hits all alike: the stored speedup and the weights chosen are from this run.
    finalists = dict(run.best_by_weights) or {run.best[2].draft_weights: run.best}
    baseline, timed = [], {weights: [] for weights in finalists}
    for _ in range(run.final_reps):
        baseline.append(run.measure(None))
        for weights, (profile, _, settings) in finalists.items():
            timed[weights].append(run.measure(profile, settings))
    finals = {w: (profile, median(timed[w]), settings) for w, (profile, _, settings) in finalists.items()}
    run.best = min(finals.values(), key=lambda best: best[1].seconds_per_token)
    run.weights_figures = weights_figures(run, finals, median(baseline))
    return run.save(complete=True, baseline=median(baseline))


def weights_figures(run: SearchRun, finals: dict[str, Best], baseline: Measurement) -> dict[str, dict]:
    """Per draft weights, why it won or lost: its final timing against autoregressive decoding, and the
    cost model's view of its profile (c = a draft token's cost in full forwards, teacher-forced acceptance,
    predicted speedup bound; profiles/draft_weights.py), measured after the first calibration prompt."""
    drafts = {w: run.drafts[w].with_profile(profile) for w, (profile, _, _) in finals.items()}
    max_draft = max(settings.max_draft for _, _, settings in finals.values())
    with torch.inference_mode():
        sequence = calibration_sequence(run.model, run.prompts[0])
        predicted = {c.weights: c for c in rank(run.model, drafts, [sequence], [len(run.prompts[0])], max_draft)}
    figures = {}
    for weights, (profile, m, settings) in finals.items():
        p = predicted[weights]
        figures[weights] = {
            "extra_bytes": drafts[weights].extra_bytes, "skipped_sublayers": profile.skipped_sublayers,
            "max_draft": settings.max_draft, "seconds_per_token": m.seconds_per_token,
            "speedup": baseline.seconds_per_token / m.seconds_per_token, "acceptance": m.acceptance,
            "draft_cost_ratio": (m.draft_seconds_per_token / baseline.seconds_per_token
                                 if m.draft_seconds_per_token else None),
            "c": p.c, "predicted_acceptance": p.acceptance, "predicted_speedup": p.bound, "best_k": p.best_k}
    for weights, extra in run.over_budget.items():
        figures[weights] = {"extra_bytes": extra, "note": f"over the memory budget of {run.budget_bytes} bytes"}
    return figures

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
    for t in sorted(done, key=lambda t: t.value):  # resuming: the best trial of each weights so far
        settings = _weights_setting(run, t.params.get("weights"))  # (its time is re-measured at the end)
        if settings.draft_weights not in run.best_by_weights:
            run.consider(_profile_from_params(run.layers, t.params), Measurement(t.value, 0), settings)
    run.trials = len(done)
    bar = run.bar(run.max_trials)
    bar.update(run.trials)
    try:
        while not run.out_of_budget():
            trial = study.ask()
            profile = _profile_from_params(run.layers, {
                f"{kind}{i}": trial.suggest_int(f"{kind}{i}", 0, 1) for kind in ("attn", "mlp")
                for i in range(run.layers)})
            # The draft weights are one more switch (only when more than one fits the budget).
            settings = _weights_setting(run, trial.suggest_categorical("weights", list(run.drafts))
                                        if len(run.drafts) > 1 else None)
            try:
                m = run.measure(profile, settings)
            except BaseException:
                study.tell(trial, state=TrialState.FAIL)
                raise
            trial.set_user_attr("acceptance", m.acceptance)
            study.tell(trial, m.seconds_per_token)
            run.consider(profile, m, settings)
            bar.update(1)
            run.show_best(bar)
    finally:
        study.set_user_attr("seconds", run.seconds())
        bar.close()


def _weights_setting(run: SearchRun, weights: str | None) -> DraftSettings:
    """The run's settings drafting with `weights` (None, or weights no longer in the budget: the run's own)."""
    return replace(run.settings, draft_weights=weights) if weights in run.drafts else run.settings


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

        def time_one(chosen: list[int], weights: str, max_draft: int, exit: str = run.settings.exit) -> None:
            key = (f"{sorted(chosen)}@{max_draft}" + ("" if weights == "full" else f"#{weights}")
                   + ("" if exit == run.settings.exit else f"/{exit}"))
            settings = replace(run.settings, max_draft=max_draft, exit=exit, draft_weights=weights)
            profile = sublayers_profile(run.layers, chosen)
            m = Measurement(**timed[key]) if key in timed else run.measure(profile, settings)
            timed[key] = m.__dict__
            save_state()
            run.consider(profile, m, settings)
            bar.update(1)
            run.show_best(bar)

        for chosen in [[], *_prefixes(state["order"])]:  # skipping nothing is a candidate too
            for weights in run.drafts:  # every skip set with every draft weights in the budget
                if run.out_of_budget():
                    return
                time_one(chosen, weights, run.settings.max_draft)
        if run.best is None:
            return
        # Then the draft length for the fastest prefix and weights, then whether its adaptive exit pays:
        # with high acceptance, stopping a draft early only adds verifications.
        best, weights = sublayer_ids(run.best[0]), run.best[2].draft_weights
        for k in DRAFT_LENGTHS:
            if k != run.settings.max_draft and not run.out_of_budget():
                time_one(best, weights, k)
        if run.settings.exit != "off" and not run.out_of_budget():
            time_one(best, weights, run.best[2].max_draft, "off")
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
