"""A fair race between autoregressive and self-speculative decoding on one device (used by the app).

The two decoders never run at the same time. The race advances one decoder by one step at a time,
always the one that has used less of its own decoding time so far, and times each step alone (the
decoders read their clocks after device work has finished). At any moment both lanes therefore show
where each method stood after about the same amount of its own time: the lane that is ahead in
tokens is the faster one, and the texts can stream side by side.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Callable, ContextManager, Iterator, Sequence

from selfspec.engine.decoding import autoregressive, self_speculative
from selfspec.engine.devices import synchronize
from selfspec.engine.divergence import Divergence, explain_difference
from selfspec.engine.draft import DraftModel
from selfspec.engine.settings import DraftSettings
from selfspec.models.loading import LanguageModel
from selfspec.profiles.schema import SkipProfile
from selfspec.engine.metrics import Summary, summarize
from selfspec.engine.records import StepRecord
from selfspec.engine.sampling import Sampling

RACE_RULE = (
    "The two methods run on the same device but never at the same time: one decoding step at a "
    "time, always the method that has used less of its own decoding time so far. Each step is timed "
    "alone, so both texts show where each method stood after the same amount of decoding time."
)


@dataclass
class Lane:
    """One method's progress: its step records and the time each step took alone."""

    name: str
    records: list[StepRecord] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)
    done: bool = False

    def add(self, record: StepRecord, seconds: float) -> None:
        self.records.append(record)
        self.step_seconds.append(seconds)

    @property
    def seconds(self) -> float:
        return sum(self.step_seconds)

    @property
    def token_ids(self) -> list[int]:
        return [t for r in self.records for t in r.token_ids]

    @property
    def tokens_per_second(self) -> float:
        seconds = self.seconds
        return len(self.token_ids) / seconds if seconds > 0 else 0.0

    def summary(self) -> Summary:
        """The records' summary, timed by this lane's own clock (not the wall clock of the race)."""
        seconds = self.seconds
        return replace(summarize(self.records), seconds=seconds, tokens_per_second=self.tokens_per_second)


@dataclass
class Race:
    autoregressive: Lane
    speculative: Lane

    @property
    def lanes(self) -> tuple[Lane, Lane]:
        return (self.autoregressive, self.speculative)

    @property
    def finished(self) -> bool:
        return all(lane.done for lane in self.lanes)

    @property
    def speedup(self) -> float | None:
        base = self.autoregressive.tokens_per_second
        return self.speculative.tokens_per_second / base if base > 0 else None

    @property
    def identical(self) -> bool:
        return self.autoregressive.token_ids == self.speculative.token_ids


def run_race(
    baseline: Iterator[StepRecord],
    candidate: Iterator[StepRecord],
    device_lock: ContextManager | None = None,
    synchronize: Callable[[], None] = lambda: None,
    clock: Callable[[], float] = time.perf_counter,
) -> Iterator[Race]:
    """Step two decoders alternately by their own elapsed time; yields the race after every step.

    `device_lock` is held around each step so that nothing else decodes on the device meanwhile;
    `synchronize` waits for queued device work before each clock reading (`clock`, in seconds). Closing this iterator
    closes both decoders.
    """
    race = Race(Lane("autoregressive"), Lane("self-speculative"))
    steps = {id(race.autoregressive): baseline, id(race.speculative): candidate}
    lock = device_lock if device_lock is not None else nullcontext()
    try:
        while not race.finished:
            lane = min((lane for lane in race.lanes if not lane.done), key=lambda lane: lane.seconds)
            with lock:
                synchronize()
                start = clock()
                record = next(steps[id(lane)], None)
                synchronize()
                seconds = clock() - start
            if record is None:
                lane.done = True
            else:
                lane.add(record, seconds)
            yield race
    finally:
        for iterator in steps.values():
            close = getattr(iterator, "close", None)
            if close is not None:
                close()


def start_race(
    lm: LanguageModel,
    prompt_ids: Sequence[int],
    profile: SkipProfile,
    max_new_tokens: int,
    sampling: Sampling,
    settings: DraftSettings,
    device_lock: ContextManager | None = None,
    draft: DraftModel | None = None,
) -> Iterator[Race]:
    """Both decoders on the same request; a bad request raises ValueError here, before any step.

    `draft`: one built for `profile` (e.g. with low-bit weights); None drafts with the full weights.
    """
    profile.check_fits(lm.model.config.num_hidden_layers)
    baseline = autoregressive(lm.model, prompt_ids, max_new_tokens, sampling, engine=lm.engine)
    candidate = self_speculative(lm.model, prompt_ids, draft or profile, max_new_tokens, sampling, settings,
                                 engine=lm.engine)
    device = lm.device
    return run_race(baseline, candidate, device_lock, lambda: synchronize(device))


def race_divergence(lm: LanguageModel, prompt_ids: Sequence[int], race: Race,
                    device_lock: ContextManager | None = None) -> Divergence | None:
    """Where a finished greedy race's outputs part and the full model's top-2 gap there (None: identical)."""
    if race.identical:
        return None
    with device_lock if device_lock is not None else nullcontext():
        return explain_difference(lm.model, prompt_ids, race.autoregressive.token_ids, race.speculative.token_ids)
