"""Searching a skip profile: the paper's Bayesian optimisation, and a much faster greedy method.

Both methods end the same way: the best profile found is timed once more next to plain
autoregressive decoding on the same prompts, so the speedup stored in the profile was measured
in the same run, on the same machine.

- `bayes` (the paper): 2L binary switches, one per sublayer; objective = measured seconds per
  generated token of greedy draft-and-verify on the calibration prompts. Optuna's TPE sampler,
  its state in a journal file, so an interrupted search resumes where it stopped.
- `greedy` (ours): teacher forcing ranks sublayers by how little skipping them changes the full
  model's next-token choices (no decoding, one forward per calibration sequence per candidate);
  sublayers are added one at a time, the one that keeps agreement highest first. Then a few
  prefixes of that order are timed end to end and the fastest is kept.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from selfspec.engine.cache import new_cache
from selfspec.engine.decoding import autoregressive, forward_full, self_speculative
from selfspec.engine.settings import DraftSettings
from selfspec.engine.draft import DraftModel
from selfspec.models.environment import device_name, library_versions
from selfspec.profiles.schema import SearchInfo, SkipProfile, fingerprint, profile_filename, write_profile
from selfspec.profiles.paired import paired
from selfspec.engine.records import summarize

METHODS = ("bayes", "greedy")


# --- measuring a profile ----------------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    """Draft-and-verify (or autoregressive, profile None) over all calibration prompts, prefill excluded."""

    seconds_per_token: float
    tokens: int
    acceptance: float | None = None
    mean_accepted_tokens: float | None = None
    draft_seconds_per_token: float | None = None  # per drafted token
    prompt_seconds_per_token: tuple[float, ...] = ()  # each prompt's own, in order (for paired comparisons)


def measure(model: nn.Module, prompts: Sequence[Sequence[int]], profile: SkipProfile | None,
            max_new_tokens: int, settings: DraftSettings = DraftSettings()) -> Measurement:
    """Time greedy decoding of every prompt; the prefill is the same for both decoders, so it is left out."""
    seconds = drafted = accepted = draft_seconds = tokens = verifications = committed = 0
    per_prompt = []
    draft = None if profile is None else DraftModel(model, profile)
    for prompt in prompts:
        steps = (autoregressive(model, prompt, max_new_tokens) if draft is None
                 else self_speculative(model, prompt, draft, max_new_tokens, settings=settings))
        records = list(steps)
        summary = summarize(records[1:])
        prompt_seconds = records[-1].elapsed_seconds - records[0].elapsed_seconds
        per_prompt.append(prompt_seconds / max(summary.new_tokens, 1))
        seconds += prompt_seconds
        tokens += summary.new_tokens
        drafted, accepted = drafted + summary.drafted, accepted + summary.accepted
        draft_seconds += summary.draft_seconds
        verifications += summary.verifications
        committed += sum(len(r.token_ids) for r in records[1:] if r.kind == "speculate")
    return Measurement(
        seconds_per_token=seconds / max(tokens, 1), tokens=tokens,
        acceptance=accepted / drafted if drafted else None,
        mean_accepted_tokens=committed / verifications if verifications else None,
        draft_seconds_per_token=draft_seconds / drafted if drafted else None,
        prompt_seconds_per_token=tuple(per_prompt),
    )


def warm_up(model: nn.Module, prompts) -> None:
    """Run both decoders once, untimed: first calls pay one-time costs that would bias the first candidate."""
    layers = model.config.num_hidden_layers
    measure(model, prompts[:1], None, 4)
    measure(model, prompts[:1], SkipProfile(layers, attn=[layers - 1]), 4)


def random_profile(num_layers: int, size: int, rng: random.Random, model: str = "") -> SkipProfile:
    """`size` sublayers drawn uniformly from the 2L (the control a searched profile must beat)."""
    chosen = rng.sample(range(2 * num_layers), size)
    return SkipProfile(num_layers, [i for i in chosen if i < num_layers],
                       [i - num_layers for i in chosen if i >= num_layers], model=model)


def sublayer_ids(profile: SkipProfile) -> list[int]:
    """The inverse of `sublayers_profile`."""
    return [*profile.attn, *(profile.num_layers + i for i in profile.mlp)]


def sublayers_profile(num_layers: int, sublayers: Sequence[int], model: str = "") -> SkipProfile:
    """Sublayer ids 0..L-1 are attention, L..2L-1 are MLP."""
    return SkipProfile(num_layers, [i for i in sublayers if i < num_layers],
                       [i - num_layers for i in sublayers if i >= num_layers], model=model)


# --- teacher-forced agreement (the greedy method's cheap objective) -------------------------------


@torch.inference_mode()
def full_choices(model: nn.Module, sequences: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """The full model's next-token argmax at every position of every sequence."""
    device = model.get_input_embeddings().weight.device
    return [forward_full(model, torch.tensor([list(s)], device=device), 0, new_cache()).argmax(-1)
            for s in sequences]


@torch.inference_mode()
def agreement(model: nn.Module, sequences: Sequence[Sequence[int]], targets: Sequence[torch.Tensor],
              profile: SkipProfile | DraftModel, skip: int = 0) -> float:
    """Fraction of positions where the draft's argmax equals the full model's (teacher forcing),
    leaving out the first `skip` positions of each sequence (e.g. the prompt's)."""
    draft = profile if isinstance(profile, DraftModel) else DraftModel(model, profile)
    device = targets[0].device
    same = total = 0
    for sequence, target in zip(sequences, targets):
        ids = torch.tensor([list(sequence)], device=device)
        positions = torch.arange(ids.shape[1], device=device)[None]
        choice = draft(ids, positions, new_cache())[0].argmax(-1)
        if draft.vocabulary is not None:
            choice = draft.vocabulary[choice]
        same += int((choice[skip:] == target[skip:]).sum())
        total += target[skip:].numel()
    return same / total


def sublayer_costs(model: nn.Module) -> list[float]:
    """Each sublayer's share of the decoder's weights (attention 0..L-1, MLP L..2L-1).

    Decoding reads every weight once per token, so a sublayer's weight share is what skipping it saves.
    """
    from selfspec.engine.architectures import decoder_layers

    layers = list(decoder_layers(model))
    sizes = [sum(p.numel() for p in layer.self_attn.parameters()) for layer in layers]
    sizes += [sum(p.numel() for p in layer.mlp.parameters()) for layer in layers]
    total = sum(sizes)
    return [size / total for size in sizes]


def greedy_order(model: nn.Module, sequences, targets, max_sublayers: int, floor: float = 0.3,
                 candidates: int = 3, on_step: Callable[[list[int], float], None] | None = None,
                 stop: Callable[[], bool] = lambda: False) -> list[tuple[list[int], float]]:
    """Greedy sublayer elimination: [(skipped sublayers so far, agreement), ...], one entry per step.

    Each step skips the sublayer that loses the least agreement per unit of cost saved (its weight
    share), so cheap-to-lose but expensive-to-run MLPs are not passed over for attention sublayers
    that save little. Every sublayer is scored alone first; after that only the `candidates`
    best-ranked remaining ones are re-scored each step, which keeps the cost near-linear.
    """
    layers = model.config.num_hidden_layers
    costs = sublayer_costs(model)
    score = lambda chosen: agreement(model, sequences, targets, sublayers_profile(layers, chosen))  # noqa: E731
    ranking = {s: score([s]) for s in range(2 * layers)}  # every sublayer alone: needed, not interruptible
    singles = dict(ranking)
    chosen: list[int] = []
    trace = []
    value = 1.0
    while len(chosen) < max_sublayers and ranking and not stop():
        price = lambda s: (value - ranking[s]) / costs[s]  # noqa: E731  agreement lost per cost saved
        shortlist = sorted(ranking, key=price)[:candidates]
        if chosen:
            for s in shortlist:
                ranking[s] = score(chosen + [s])
        best = min(shortlist, key=price)
        if ranking[best] < floor:
            return trace
        value = ranking.pop(best)  # the agreement of chosen + [best]
        chosen.append(best)
        trace.append((list(chosen), value))
        if on_step:
            on_step(chosen, value)
    # Out of time: finish the order from the single-sublayer ranking, estimating agreement as if the
    # sublayers' damage were independent (a product), so the timing stage still has prefixes to try.
    for s in sorted(ranking, key=lambda s: (1 - singles[s]) / costs[s]):
        value *= singles[s]
        if len(chosen) >= max_sublayers or value < floor:
            break
        chosen.append(s)
        trace.append((list(chosen), value))
    return trace


# --- the search drivers ---------------------------------------------------------------------------


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
            device=device_name(self.model), dtype=str(self.model.dtype).removeprefix("torch."),
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


def median(ms: list[Measurement]) -> Measurement:
    """The median rep by time per token (the lower middle one for an even count)."""
    return sorted(ms, key=lambda m: m.seconds_per_token)[(len(ms) - 1) // 2]


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
    return SkipProfile(layers, [i for i in range(layers) if params[f"attn{i}"]],
                       [i for i in range(layers) if params[f"mlp{i}"]])


RANKING_PROMPTS = 3
RANKING_CONTEXT = 8  # prompt tokens kept before each continuation
RANKING_CONTINUATION = 24  # full-model tokens after each
AGREEMENT_LEVELS = (0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6, 0.5)
DRAFT_LENGTHS = (2, 3, 4, 6)


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


def ranking_text(model: nn.Module, prompts, max_new_tokens: int) -> list[list[int]]:
    """What the ranking scores: a few prompts' tails with the full model's continuations, as one sequence.

    A forward over many tokens is compute-bound and costs many decode steps, so the text is kept short:
    the end of each prompt (context) and the continuation, where decoding actually happens.
    """
    prompts = list(prompts)[:: max(1, len(prompts) // RANKING_PROMPTS)][:RANKING_PROMPTS]
    texts = [p[-RANKING_CONTEXT:] + c
             for p, c in zip(prompts, continuations(model, prompts, min(max_new_tokens, RANKING_CONTINUATION)))]
    return [[t for text in texts for t in text]]


def _prefixes(order: list[tuple[list[int], float]]) -> list[list[int]]:
    """The longest prefix of the elimination order at each agreement level (distinct ones)."""
    out: list[list[int]] = []
    for level in AGREEMENT_LEVELS:
        fitting = [chosen for chosen, value in order if value >= level]
        if fitting and fitting[-1] not in out:
            out.append(fitting[-1])
    return out


def continuations(model: nn.Module, prompts, max_new_tokens: int) -> list[list[int]]:
    """The full model's greedy continuation of every prompt (the text teacher forcing scores)."""
    return [[t for r in autoregressive(model, p, max_new_tokens) for t in r.token_ids] for p in prompts]


def compare(model: nn.Module, prompts, candidates: dict[str, tuple[SkipProfile | None, DraftSettings]],
            max_new_tokens: int, reps: int = 3) -> dict[str, list[Measurement]]:
    """Every candidate timed `reps` times, round-robin so that noise hits all alike: {name: one per rep}."""
    times: dict[str, list[Measurement]] = {name: [] for name in candidates}
    warm_up(model, prompts)
    for _ in range(reps):
        for name, (profile, settings) in candidates.items():
            times[name].append(measure(model, prompts, profile, max_new_tokens, settings))
    return times


def comparison_table(results: dict[str, list[Measurement]], baseline: str = "autoregressive") -> str:
    """Median rep of each candidate; speedup and draft cost ratio against the baseline's median."""
    medians = {name: median(ms) for name, ms in results.items()}
    base = medians[baseline].seconds_per_token
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    lines = ["| candidate | ms/token | speedup | acceptance | tokens/verify | draft cost ratio |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, m in medians.items():
        ratio = m.draft_seconds_per_token / base if m.draft_seconds_per_token else None
        lines.append(f"| {name} | {1000 * m.seconds_per_token:.1f} | {base / m.seconds_per_token:.2f}x | "
                     f"{fmt(m.acceptance, '.2f')} | {fmt(m.mean_accepted_tokens, '.2f')} | {fmt(ratio, '.2f')} |")
    return "\n".join(lines)


def paired_timings(ms: list[Measurement]) -> list[float]:
    """Seconds per token of every (rep, prompt) pair, in the same order for every candidate."""
    return [t for m in ms for t in m.prompt_seconds_per_token]


def paired_table(results: dict[str, list[Measurement]], subjects: Sequence[str], controls: Sequence[str]) -> str:
    """Each subject against each control on the same (prompt, rep) pairs: is it faster beyond noise?"""
    lines = ["| candidate | vs | faster in pairs | sign test p | speedup vs control [95% CI] |",
             "| --- | --- | ---: | ---: | ---: |"]
    for subject in subjects:
        for control in (c for c in controls if c != subject):
            stats = paired(paired_timings(results[subject]), paired_timings(results[control]))
            lines.append(f"| {subject} | {control} | {stats.summary()} |")
    return "\n".join(lines)


# --- command line -------------------------------------------------------------------------------


def register(commands) -> None:
    from selfspec.cli import add_fetch_argument, add_model_arguments

    p = commands.add_parser("search", help="search a skip profile for a model (fast greedy, or the paper's bayes)")
    add_model_arguments(p)
    add_fetch_argument(p)
    p.add_argument("--method", choices=METHODS, default="greedy",
                   help="greedy: ours, minutes; bayes: the paper's Bayesian optimisation, as long as the budget")
    p.add_argument("--budget-minutes", type=float, default=15.0, help="time for the search itself")
    p.add_argument("--max-trials", type=int, default=None, help="most end-to-end timings (all runs of a resumed search)")
    p.add_argument("--calibration", default=None,
                   help="prompts file: a JSON list of strings, or text with prompts separated by blank lines "
                        "(default: built-in summarisation, code and Q&A prompts)")
    p.add_argument("--out", default=None, help="profile to write (default: <model>.json here); state goes next to it")
    p.add_argument("--resume", action="store_true", help="continue an interrupted search with the same --out")
    p.add_argument("--max-new-tokens", type=int, default=32, help="tokens generated per prompt per timing")
    p.add_argument("--max-draft", type=int, default=None,
                   help=f"K the search starts from (default {DraftSettings.max_draft}); greedy also tries others")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compare", action="store_true",
                   help="afterwards, also time skipping nothing and a random profile of the same size")
    p.set_defaults(run=cmd_search)


def cmd_search(args) -> int:
    from selfspec.profiles.calibration import builtin_prompts, read_calibration
    from selfspec.models.loading import load_model

    if args.budget_minutes <= 0:
        raise ValueError("--budget-minutes must be positive")
    texts = read_calibration(args.calibration) if args.calibration else builtin_prompts()
    lm = load_model(args.model, dtype=args.dtype, device=args.device, fetch=args.fetch)
    out = Path(args.out or profile_filename(lm.name))
    run = SearchRun(lm.model, lm.name, [lm.encode(t) for t in texts], out,
                    calibration=args.calibration or "builtin", max_new_tokens=args.max_new_tokens,
                    settings=DraftSettings.from_profile(None, max_draft=args.max_draft), budget_seconds=60 * args.budget_minutes,
                    max_trials=args.max_trials, seed=args.seed)
    profile = run_search(run, args.method, resume=args.resume)
    s = profile.search
    print(f"{out}: skips attention {list(profile.attn)} and MLP {list(profile.mlp)} "
          f"({profile.skipped_sublayers} of {2 * profile.num_layers} sublayers), max_draft {profile.decoding.max_draft}")
    print(f"{s.method}: {s.trials} trials in {s.seconds:.0f} s; {1000 * s.objective:.1f} ms/token, "
          f"speedup {s.speedup:.2f}x vs autoregressive, acceptance {s.acceptance or 0:.2f}, "
          f"{s.mean_accepted_tokens or 0:.2f} tokens per verification, draft cost ratio {s.draft_cost_ratio or 0:.2f}")
    if args.compare:
        control = random_profile(profile.num_layers, profile.skipped_sublayers, random.Random(args.seed))
        settings = DraftSettings.from_profile(profile)
        searched = f"searched ({args.method})"
        results = compare(lm.model, run.prompts, {
            "autoregressive": (None, settings), searched: (profile, settings),
            "skip nothing": (SkipProfile.none(profile.num_layers), settings),
            "random, same size": (control, settings)}, args.max_new_tokens)
        print(comparison_table(results))
        print(paired_table(results, [searched], ["skip nothing", "random, same size"]))
    return 0

