"""Autoregressive and self-speculative decoding, as iterators of per-step records.

State kept between steps: the shared KV cache, which holds every committed token except the last
one (the "pending" token, fed at the start of the next step), and the pending token itself.

A self-speculative step:
  1. draft: the layer-skipping view proposes up to K tokens, one at a time, from the pending token;
  2. roll the cache back to the committed length (draft K/V is approximate and partial);
  3. verify: one full-model forward over [pending, drafts...];
  4. accept the longest agreeing prefix plus one full-model token (correction or bonus);
  5. roll the cache back to the committed length again.
"""

from __future__ import annotations

import time
from typing import Callable, Iterator, NamedTuple, Sequence

import torch
from torch import nn

from selfspec.engine.adaptive import no_exit
from selfspec.engine.cache import truncate
from selfspec.engine.context import ContextIndex
from selfspec.engine.controller import DraftLength, Plan
from selfspec.engine.devices import HostCopy, model_device, synchronize
from selfspec.engine.draft import DraftModel
from selfspec.engine.runtime import Engine, forward_full  # noqa: F401 (forward_full: re-exported)
from selfspec.profiles.schema import SkipProfile
from selfspec.engine.records import StepRecord
from selfspec.engine.settings import DraftSettings
from selfspec.engine.sampling import (Sampling, accept_greedy, accept_sampled, greedy_choice, greedy_tokens,
                                      probabilities, sample)


def eos_token_ids(model: nn.Module) -> frozenset[int]:
    """The ids that end generation, as `generate()` reads them from the generation config."""
    config = getattr(model, "generation_config", None) or model.config
    eos = getattr(config, "eos_token_id", None)
    if eos is None:
        return frozenset()
    return frozenset([eos] if isinstance(eos, int) else eos)


def context_length(model: nn.Module) -> int | None:
    return getattr(model.config, "max_position_embeddings", None)


def _check_request(model: nn.Module, prompt_ids: Sequence[int], max_new_tokens: int) -> int:
    """Validate a request; returns the number of tokens that fit in the context."""
    if len(prompt_ids) == 0:
        raise ValueError("the prompt is empty")
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    limit = context_length(model)
    if limit is not None:
        if len(prompt_ids) >= limit:
            raise ValueError(f"the prompt has {len(prompt_ids)} tokens; the model's context holds {limit}")
        max_new_tokens = min(max_new_tokens, limit - len(prompt_ids))
    return max_new_tokens


def engine_for(model: nn.Module, engine: Engine | None) -> Engine:
    """The engine to run `model` with: the one given (built once per model), else a new default one."""
    if engine is None:
        return Engine(model)
    if engine.model is not model:
        raise ValueError("the engine was built for a different model")
    return engine


def choose(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> torch.Tensor:
    """One token from one row of logits: argmax, or a draw from the processed distribution."""
    if sampling.greedy:
        return greedy_tokens(logits)
    return sample(probabilities(logits, sampling), generator)


class Queued(NamedTuple):
    """A plain step queued on the device: its token there (the next step's input), and that token's copy to
    the host (reading it waits for the step)."""
    token: torch.Tensor
    on_host: HostCopy


class Drafted(NamedTuple):
    tokens: torch.Tensor  # (n,) drafted ids
    dists: torch.Tensor | None  # (n, V') draft distributions over the draft's vocabulary, when sampling
    first_seconds: float | None  # the first draft forward (the one that read the copies), with a clock
    copies_kept: int = 0  # the leading copies the draft agreed with (the step verifies only those)


@torch.inference_mode()
def draft_tokens(
    draft: DraftModel,
    pending: torch.Tensor,
    position: int,
    cache,
    max_tokens: int,
    threshold: float,
    sampling: Sampling,
    generator: torch.Generator | None,
    engine: Engine | None = None,
    copied: torch.Tensor | None = None,
    clock: Callable[[], float] | None = None,
    vetted: bool = False,
) -> Drafted:
    """Draft up to `max_tokens` tokens after `pending` (at `position`), through `engine`'s draft step.

    `copied`: tokens already proposed from the context, which the draft reads (in one wider step)
    before continuing after them. The draft's own next token after each copy comes out of that read
    for free; at the first copy it would not have chosen, the copies are cut and the draft continues
    from its own token instead (a copy the draft disagrees with seldom survives the verification, and
    drafts planned after a failed copy are lost with it). `vetted`: the copies are not read; the draft's
    first token decides instead: if the draft would choose the first copy, nothing is drafted and every
    copy is kept for verification, else the draft goes on from its own token. (Decided by the draft's top
    choice, not by a sampled token, so that which proposal is verified never depends on the sampling:
    each proposal keeps the distribution it was drawn from, and sampling stays exact.) Stops early after
    a token whose draft top-1 probability is below `threshold`. With a `clock`, the first forward is timed
    apart.
    """
    vocabulary = draft.vocabulary
    engine = engine or Engine(draft.model, choose_kernels=False)  # drafting needs no full-model products
    tokens, dists, first_seconds, kept = [], [], None, 0
    start = clock() if clock is not None else None
    if copied is None or vetted:
        logits = engine.draft(draft, pending.view(1, 1), position, cache)
        if vetted and _agreed(logits.view(1, -1), copied[:1], vocabulary):
            return Drafted(copied[:0], None, None, len(copied))
    else:
        read = torch.cat([pending.view(1), copied]).view(1, -1)
        rows = draft(read, torch.arange(position, position + read.shape[-1], device=read.device)[None], cache)[0]
        kept = _agreed(rows[:-1], copied, vocabulary)
        if kept < len(copied):
            truncate(cache, position + 1 + kept)  # the draft's keys past its own token are not its text
        logits, position = rows[kept], position + kept
    while True:
        if sampling.greedy:
            index, confidence = greedy_choice(logits, threshold > 0)
        else:
            q = probabilities(logits, sampling)
            index = sample(q, generator)
            confidence = q.max() if threshold > 0 else None
            dists.append(q)
        token = (index if vocabulary is None else vocabulary[index]).view(1, 1)
        tokens.append(token.view(1))
        if start is not None and first_seconds is None:
            first_seconds = clock() - start
        if len(tokens) == max_tokens or (confidence is not None and float(confidence) < threshold):
            break
        position += 1
        logits = engine.draft(draft, token, position, cache)
    return Drafted(torch.cat(tokens), torch.stack(dists) if dists else None, first_seconds, kept)


def _agreed(logits: torch.Tensor, copied: torch.Tensor, vocabulary: torch.Tensor | None) -> int:
    """How many leading `copied` tokens are the draft's own top choices (`logits`: one row per copy)."""
    chosen = greedy_tokens(logits)
    if vocabulary is not None:
        chosen = vocabulary[chosen]
    differ = (chosen != copied).nonzero()
    return int(differ[0, 0]) if len(differ) else len(copied)


def _one_hot(tokens: torch.Tensor, size: int, dtype: torch.dtype) -> torch.Tensor:
    """A deterministic proposal as a draft distribution: all its mass on the proposed token."""
    return nn.functional.one_hot(tokens, size).to(dtype)


def _full_vocabulary(dists: torch.Tensor, vocabulary: torch.Tensor | None, size: int) -> torch.Tensor:
    """Draft distributions over the draft's vocabulary -> over the full model's vocabulary."""
    if vocabulary is None:
        return dists
    full = torch.zeros(dists.shape[0], size, dtype=dists.dtype, device=dists.device)
    return full.index_copy_(1, vocabulary, dists)


@torch.inference_mode()
def verify(
    engine: Engine,
    pending: torch.Tensor,
    drafted: torch.Tensor,
    draft_dists: torch.Tensor | None,
    vocabulary: torch.Tensor | None,
    position: int,
    cache,
    sampling: Sampling,
    generator: torch.Generator | None,
    copied: int = 0,
) -> tuple[int, torch.Tensor]:
    """One full forward over [pending, drafts]; returns (drafts accepted, the full model's next token).

    The first `copied` drafts came from the context: a deterministic proposal, so its draft
    distribution is one-hot and the same min(1, p/q) rule keeps sampling exact.
    """
    logits = engine.verify(torch.cat([pending.view(1), drafted])[None], position, cache)
    if sampling.greedy:
        return accept_greedy(drafted, logits)
    target = probabilities(logits, sampling)
    proposal = _one_hot(drafted[:copied], target.shape[-1], target.dtype)
    if draft_dists is not None:
        proposal = torch.cat([proposal, _full_vocabulary(draft_dists, vocabulary, target.shape[-1])])
    return accept_sampled(drafted, proposal, target, generator)


# --- the decoders -----------------------------------------------------------------------------


class _Run:
    """Bookkeeping shared by both decoders: budget, EOS, clocks and step records."""

    def __init__(self, engine: Engine, prompt_ids: Sequence[int], max_new_tokens: int):
        model = engine.model
        self.engine = engine
        self.budget = _check_request(model, prompt_ids, max_new_tokens)
        self.device = model_device(model)
        self.eos = eos_token_ids(model)
        self.prompt = torch.tensor([list(prompt_ids)], dtype=torch.long, device=self.device)
        self.generated = 0
        self.finished = False
        self.step = 0
        self.start = time.perf_counter()

    def clock(self) -> float:
        synchronize(self.device)  # clocks are read only after queued device work has finished
        return time.perf_counter()

    def commit(self, tokens: list[int], kind: str, drafted: int, accepted: int,
               draft_seconds: float, verify_seconds: float, gamma: float | None, copied: int = 0,
               vetted: bool = False) -> StepRecord:
        tokens = tokens[: self.budget - self.generated]
        for i, token in enumerate(tokens):
            if token in self.eos:
                tokens = tokens[: i + 1]
                self.finished = True
                break
        self.generated += len(tokens)
        self.finished = self.finished or self.generated >= self.budget
        record = StepRecord(
            step=self.step, kind=kind, token_ids=tuple(tokens), drafted=drafted, accepted=accepted,
            draft_seconds=draft_seconds, verify_seconds=verify_seconds,
            elapsed_seconds=time.perf_counter() - self.start, gamma=gamma, copied=copied,
            vetted=vetted,
        )
        self.step += 1
        return record

    def request_cache(self, max_width: int = 1):
        """The request's cache, handed back to the engine when the run ends (finished or stopped)."""
        return self.engine.request_cache(self.prompt.shape[1], self.budget, max_width)

    def prefill(self, cache, sampling: Sampling, generator) -> tuple[StepRecord, torch.Tensor]:
        t0 = self.clock()
        logits = self.engine.full(self.prompt, 0, cache, last_only=True)[-1]
        token = choose(logits, sampling, generator)
        record = self.commit([int(token)], "prefill", 0, 0, 0.0, self.clock() - t0, None)
        return record, token

    def queue_one(self, cache, pending: torch.Tensor, position: int, sampling: Sampling, generator) -> "Queued":
        """One full-model step for `pending` at `position`, queued."""
        logits = self.engine.full(pending.view(1, 1), position, cache)[-1]
        token = choose(logits, sampling, generator)
        return Queued(token, HostCopy(token))

    def decode_one(self, cache, pending: torch.Tensor, sampling: Sampling,
                   generator, gamma: float | None) -> tuple[StepRecord, torch.Tensor]:
        t0 = self.clock()
        position = self.prompt.shape[1] + self.generated - 1
        logits = self.engine.full(pending.view(1, 1), position, cache)[-1]
        token = choose(logits, sampling, generator)
        record = self.commit([int(token)], "decode", 0, 0, 0.0, self.clock() - t0, gamma)
        return record, token


def autoregressive(
    model: nn.Module,
    prompt_ids: Sequence[int],
    max_new_tokens: int = 128,
    sampling: Sampling = Sampling(),
    engine: Engine | None = None,
    read_ahead: bool | None = None,
) -> Iterator[StepRecord]:
    """Plain decoding with the full model: one record per generated token.

    `engine` (runtime.py) says how the forward passes run; pass the model's own to reuse its
    measurements and compiled steps (the default builds a new one). `read_ahead`: queue each step before
    reading the last one's token (None: on accelerators, `reads_ahead`).
    """
    run = _Run(engine_for(model, engine), prompt_ids, max_new_tokens)
    return _autoregressive(run, sampling, reads_ahead(run.device) if read_ahead is None else read_ahead)


def reads_ahead(device: torch.device) -> bool:
    """Whether plain decoding queues each step before reading the last one's token (`_autoregressive`)."""
    return device.type != "cpu"


def _autoregressive(run: _Run, sampling: Sampling, read_ahead: bool) -> Iterator[StepRecord]:
    """With `read_ahead` (an accelerator's default) each step is queued before the last one's token is read
    back (the token stays on the device as the next step's input), so the host's work between steps (reading
    the token, its record, the caller's use of it, launching the next step) overlaps the device's next step
    instead of leaving the device idle; a step queued past an end-of-sequence token is discarded. On the CPU
    the host is the device: each token is read as soon as it is made, and no step is run in vain."""
    with run.request_cache() as cache:
        generator = sampling.generator(run.device)
        record, pending = run.prefill(cache, sampling, generator)
        yield record
        if run.finished:
            return
        position, step = run.prompt.shape[1], None  # where the pending token goes; the step queued for it
        while True:
            started = time.perf_counter()
            step = step or run.queue_one(cache, pending, position, sampling, generator)
            fills_budget = run.generated + 1 >= run.budget
            ahead = (run.queue_one(cache, step.token, position + 1, sampling, generator)
                     if read_ahead and not fills_budget else None)
            record = run.commit([step.on_host.read()], "decode", 0, 0, 0.0, time.perf_counter() - started, None)
            yield record
            if run.finished:
                return
            position, pending, step = position + 1, step.token, ahead


def self_speculative(
    model: nn.Module,
    prompt_ids: Sequence[int],
    draft: DraftModel | SkipProfile,
    max_new_tokens: int = 128,
    sampling: Sampling = Sampling(),
    settings: DraftSettings = DraftSettings(),
    engine: Engine | None = None,
) -> Iterator[StepRecord]:
    """Draft with skipped sublayers, verify with the full model: one record per step.

    The tokens are exactly those of `autoregressive` with the same arguments (greedy), or follow the
    same distribution (sampling).
    """
    if isinstance(draft, SkipProfile):
        draft = DraftModel(model, draft)
    elif draft.model is not model:
        raise ValueError("the draft was built for a different model")
    run = _Run(engine_for(model, engine), prompt_ids, max_new_tokens)
    return _self_speculative(draft, run, sampling, settings)


def _controls_lengths(settings: DraftSettings, sampling: Sampling) -> bool:
    """The controller decides from clocks, so step boundaries vary from run to run: harmless for greedy
    output, but a seeded sample would change with them; a seed keeps the fixed draft length."""
    return settings.controller and (sampling.greedy or sampling.seed is None)


def _self_speculative(draft: DraftModel, run: _Run, sampling: Sampling,
                      settings: DraftSettings) -> Iterator[StepRecord]:
    lengths = DraftLength(settings.max_draft) if _controls_lengths(settings, sampling) else None
    if lengths is None:
        return _speculative_steps(draft, run, sampling, settings, None)
    if draft.carried is not None:
        lengths.start_from(draft.carried)
    return _remembering(draft, lengths, _speculative_steps(draft, run, sampling, settings, lengths))


def _remembering(draft: DraftModel, lengths: DraftLength, steps: Iterator[StepRecord]) -> Iterator[StepRecord]:
    """The steps; when the run ends (finished or stopped), what its controller measured is left on the
    draft for the next run with it (a new object: concurrent runs never share one)."""
    try:
        yield from steps
    finally:
        draft.carried = lengths.carried()


def _speculative_steps(draft: DraftModel, run: _Run, sampling: Sampling, settings: DraftSettings,
                       lengths: DraftLength | None) -> Iterator[StepRecord]:
    with run.request_cache(settings.widest_step) as cache:
        yield from _speculating(draft, run, sampling, settings, lengths, cache)


def _speculating(draft: DraftModel, run: _Run, sampling: Sampling, settings: DraftSettings,
                 lengths: DraftLength | None, cache) -> Iterator[StepRecord]:
    generator = sampling.generator(run.device)
    # A draft that skips nothing is the model itself up to its weights' rounding: its top-1 probability
    # says how sure the model is, not whether the two will disagree, so it drafts the whole planned length.
    exit_rule = settings.new_exit() if draft.profile.skipped_sublayers else no_exit()
    context = ContextIndex(run.prompt[0].tolist()) if settings.context_tokens else None
    record, pending = run.prefill(cache, sampling, generator)
    yield record
    while not run.finished:
        if context is not None:
            context.extend(record.token_ids)
        position = run.prompt.shape[1] + run.generated - 1  # where the pending token goes
        left = run.budget - run.generated - 1  # one token left: no proposal
        proposal, match = ([], 0) if context is None else context.propose_matched(min(settings.context_tokens, left))
        n_copied, n_draft, vetted = _plan(lengths, settings, left, len(proposal), match)
        compilations = run.engine.compilations
        if n_copied + n_draft < 1:  # a plain step with the full model
            record, pending = run.decode_one(cache, pending, sampling, generator, exit_rule.threshold)
            if lengths is not None:
                if run.engine.compilations == compilations:  # a step that compiled timed the compiler
                    lengths.observe_plain(record.verify_seconds)
                lengths.observe_copies(proposal, list(record.token_ids), match)
            yield record
            continue
        t0 = run.clock()
        copied = torch.tensor(proposal[:n_copied], dtype=torch.long, device=run.device)
        drafted, dists, reading = copied, None, None
        if n_draft:
            reads = n_copied and not vetted  # the draft's first forward reads the copies: timed apart
            more, dists, reading, n_copied = draft_tokens(
                draft, pending, position, cache, n_draft, exit_rule.threshold, sampling, generator, run.engine,
                copied if n_copied else None, clock=run.clock if reads and lengths is not None else None,
                vetted=vetted)
            drafted = torch.cat([copied[:n_copied], more])
        truncate(cache, position)
        t1 = run.clock()
        accepted, pending = verify(run.engine, pending, drafted, dists, draft.vocabulary, position, cache,
                                   sampling, generator, n_copied)
        truncate(cache, position + 1 + accepted)
        t2 = run.clock()
        if len(drafted) > n_copied:
            exit_rule.update(max(0, accepted - n_copied), len(drafted) - n_copied)
        tokens = drafted[:accepted].tolist() + [int(pending)]
        if lengths is not None:
            if run.engine.compilations == compilations:
                lengths.observe_step(n_copied, len(drafted) - n_copied, accepted, t1 - t0, t2 - t1, reading)
            lengths.observe_copies(proposal, tokens, match)
        record = run.commit(tokens, "speculate", len(drafted), accepted, t1 - t0, t2 - t1,
                            exit_rule.threshold, copied=n_copied, vetted=vetted and len(drafted) == n_copied)
        yield record


def _plan(lengths: DraftLength | None, settings: DraftSettings, left: int, available: int,
          match: int) -> Plan:
    """What the next step verifies (tokens copied from the context, tokens drafted, and whether the
    draft's first token vets the copies). The controller weighs
    both sources by what they earned in this run; without it, copied tokens (free) come first and
    the draft continues after them up to K."""
    if lengths is not None:
        return lengths.plan(left, available, settings.context_tokens, match)
    copied = min(available, settings.context_tokens, left)
    return Plan(copied, max(0, min(settings.max_draft, left) - copied))
