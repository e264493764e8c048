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
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import nn

from selfspec.engine.adaptive import AdaptiveThreshold, DraftExit, FixedThreshold
from selfspec.engine.cache import new_cache, truncate
from selfspec.engine.controller import DraftLength
from selfspec.engine.draft import DraftModel
from selfspec.engine.narrow_linear import NarrowLinear
from selfspec.profiles.schema import SkipProfile
from selfspec.engine.records import StepRecord
from selfspec.engine.sampling import Sampling, accept_greedy, accept_sampled, probabilities, sample


@dataclass(frozen=True)
class DraftSettings:
    max_draft: int = 4  # K: most tokens drafted per step
    exit: str = "adaptive"  # "adaptive", "fixed" or "off"
    threshold: float = 0.6  # fixed threshold, or the adaptive rule's starting gamma
    target_acceptance: float = 0.9  # adaptive rule's alpha
    controller: bool = False  # choose each step's draft length (0 = a plain step) from measured costs

    def __post_init__(self) -> None:
        if not isinstance(self.max_draft, int) or self.max_draft < 1:
            raise ValueError(f"max_draft must be a positive integer, got {self.max_draft!r}")
        if self.exit not in ("adaptive", "fixed", "off"):
            raise ValueError(f"exit must be 'adaptive', 'fixed' or 'off', got {self.exit!r}")
        if not 0 <= self.threshold <= 1:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")

    def new_exit(self) -> DraftExit:
        if self.exit == "adaptive":
            return AdaptiveThreshold(gamma=self.threshold, target=self.target_acceptance)
        return FixedThreshold(self.threshold if self.exit == "fixed" else 0.0)


def eos_token_ids(model: nn.Module) -> frozenset[int]:
    """The ids that end generation, as `generate()` reads them from the generation config."""
    config = getattr(model, "generation_config", None) or model.config
    eos = getattr(config, "eos_token_id", None)
    if eos is None:
        return frozenset()
    return frozenset([eos] if isinstance(eos, int) else eos)


def context_length(model: nn.Module) -> int | None:
    return getattr(model.config, "max_position_embeddings", None)


def _device(model: nn.Module) -> torch.device:
    return model.get_input_embeddings().weight.device


def _synchronize(device: torch.device) -> None:
    # Clocks are read only after queued device work has finished.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


# --- the model's forward passes ---------------------------------------------------------------


@torch.inference_mode()
def forward_full(model: nn.Module, tokens: torch.Tensor, start: int, cache, last_only: bool = False) -> torch.Tensor:
    """Full-model logits (q, V) for `tokens` (1, q) placed at positions start..start+q-1."""
    positions = torch.arange(start, start + tokens.shape[-1], device=tokens.device)[None]
    out = model(input_ids=tokens, position_ids=positions, cache=cache, use_cache=True,
                logits_to_keep=1 if last_only else 0)
    return out.logits[0]


def forward_verify(model: nn.Module, tokens: torch.Tensor, start: int, cache) -> torch.Tensor:
    """`forward_full` over the few positions of a verification; on CPU, with products that read each
    weight once (see narrow_linear.py: torch's few-row CPU path costs 2-3x a one-row product)."""
    if tokens.device.type != "cpu":
        return forward_full(model, tokens, start, cache)
    with NarrowLinear():
        return forward_full(model, tokens, start, cache)


def choose(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> torch.Tensor:
    """One token from one row of logits: argmax, or a draw from the processed distribution."""
    if sampling.greedy:
        return logits.argmax(-1)
    return sample(probabilities(logits, sampling), generator)


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
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Draft up to `max_tokens` tokens after `pending` (at `position`).

    Stops early after a token whose draft top-1 probability is below `threshold`. Returns the drafted
    ids (n,) and, when sampling, the draft distributions over the draft vocabulary (n, V').
    """
    vocabulary = draft.vocabulary
    tokens, dists = [], []
    token = pending.view(1, 1)
    for i in range(max_tokens):
        logits = draft(token, torch.tensor([[position + i]], device=token.device), cache)[0, -1]
        if sampling.greedy:
            index = logits.argmax(-1)
            confidence = torch.softmax(logits.float(), -1)[index] if threshold > 0 else None
        else:
            q = probabilities(logits, sampling)
            index = sample(q, generator)
            confidence = q.max() if threshold > 0 else None
            dists.append(q)
        token = (index if vocabulary is None else vocabulary[index]).view(1, 1)
        tokens.append(token.view(1))
        if confidence is not None and float(confidence) < threshold:
            break
    drafted = torch.cat(tokens)
    return drafted, (torch.stack(dists) if dists else None)


def _full_vocabulary(dists: torch.Tensor, vocabulary: torch.Tensor | None, size: int) -> torch.Tensor:
    """Draft distributions over the draft's vocabulary -> over the full model's vocabulary."""
    if vocabulary is None:
        return dists
    full = torch.zeros(dists.shape[0], size, dtype=dists.dtype, device=dists.device)
    return full.index_copy_(1, vocabulary, dists)


@torch.inference_mode()
def verify(
    model: nn.Module,
    pending: torch.Tensor,
    drafted: torch.Tensor,
    draft_dists: torch.Tensor | None,
    vocabulary: torch.Tensor | None,
    position: int,
    cache,
    sampling: Sampling,
    generator: torch.Generator | None,
) -> tuple[int, torch.Tensor]:
    """One full forward over [pending, drafts]; returns (drafts accepted, the full model's next token)."""
    logits = forward_verify(model, torch.cat([pending.view(1), drafted])[None], position, cache)
    if sampling.greedy:
        return accept_greedy(drafted, logits)
    target = probabilities(logits, sampling)
    return accept_sampled(drafted, _full_vocabulary(draft_dists, vocabulary, target.shape[-1]), target, generator)


# --- the decoders -----------------------------------------------------------------------------


class _Run:
    """Bookkeeping shared by both decoders: budget, EOS, clocks and step records."""

    def __init__(self, model: nn.Module, prompt_ids: Sequence[int], max_new_tokens: int):
        self.budget = _check_request(model, prompt_ids, max_new_tokens)
        self.device = _device(model)
        self.eos = eos_token_ids(model)
        self.prompt = torch.tensor([list(prompt_ids)], dtype=torch.long, device=self.device)
        self.generated = 0
        self.finished = False
        self.step = 0
        self.start = time.perf_counter()

    def clock(self) -> float:
        _synchronize(self.device)
        return time.perf_counter()

    def commit(self, tokens: list[int], kind: str, drafted: int, accepted: int,
               draft_seconds: float, verify_seconds: float, gamma: float | None) -> StepRecord:
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
            elapsed_seconds=time.perf_counter() - self.start, gamma=gamma,
        )
        self.step += 1
        return record

    def prefill(self, model: nn.Module, cache, sampling: Sampling, generator) -> tuple[StepRecord, torch.Tensor]:
        t0 = self.clock()
        logits = forward_full(model, self.prompt, 0, cache, last_only=True)[-1]
        token = choose(logits, sampling, generator)
        record = self.commit([int(token)], "prefill", 0, 0, 0.0, self.clock() - t0, None)
        return record, token

    def decode_one(self, model: nn.Module, cache, pending: torch.Tensor, sampling: Sampling,
                   generator, gamma: float | None) -> tuple[StepRecord, torch.Tensor]:
        t0 = self.clock()
        position = self.prompt.shape[1] + self.generated - 1
        logits = forward_full(model, pending.view(1, 1), position, cache)[-1]
        token = choose(logits, sampling, generator)
        record = self.commit([int(token)], "decode", 0, 0, 0.0, self.clock() - t0, gamma)
        return record, token


def autoregressive(
    model: nn.Module,
    prompt_ids: Sequence[int],
    max_new_tokens: int = 128,
    sampling: Sampling = Sampling(),
) -> Iterator[StepRecord]:
    """Plain decoding with the full model: one record per generated token."""
    run = _Run(model, prompt_ids, max_new_tokens)
    return _autoregressive(model, run, sampling)


def _autoregressive(model: nn.Module, run: _Run, sampling: Sampling) -> Iterator[StepRecord]:
    cache = new_cache()
    generator = sampling.generator(run.device)
    record, pending = run.prefill(model, cache, sampling, generator)
    yield record
    while not run.finished:
        record, pending = run.decode_one(model, cache, pending, sampling, generator, None)
        yield record


def self_speculative(
    model: nn.Module,
    prompt_ids: Sequence[int],
    draft: DraftModel | SkipProfile,
    max_new_tokens: int = 128,
    sampling: Sampling = Sampling(),
    settings: DraftSettings = DraftSettings(),
) -> Iterator[StepRecord]:
    """Draft with skipped sublayers, verify with the full model: one record per step.

    The tokens are exactly those of `autoregressive` with the same arguments (greedy), or follow the
    same distribution (sampling).
    """
    if isinstance(draft, SkipProfile):
        draft = DraftModel(model, draft)
    elif draft.model is not model:
        raise ValueError("the draft was built for a different model")
    run = _Run(model, prompt_ids, max_new_tokens)
    return _self_speculative(model, draft, run, sampling, settings)


def _controls_lengths(settings: DraftSettings, sampling: Sampling) -> bool:
    """The controller decides from clocks, so step boundaries vary from run to run: harmless for greedy
    output, but a seeded sample would change with them; a seed keeps the fixed draft length."""
    return settings.controller and (sampling.greedy or sampling.seed is None)


def _self_speculative(model: nn.Module, draft: DraftModel, run: _Run, sampling: Sampling,
                      settings: DraftSettings) -> Iterator[StepRecord]:
    cache = new_cache()
    generator = sampling.generator(run.device)
    exit_rule = settings.new_exit()
    lengths = DraftLength(settings.max_draft) if _controls_lengths(settings, sampling) else None
    record, pending = run.prefill(model, cache, sampling, generator)
    yield record
    while not run.finished:
        position = run.prompt.shape[1] + run.generated - 1  # where the pending token goes
        max_tokens = min(settings.max_draft, run.budget - run.generated - 1)  # one token left: no draft
        if lengths is not None:
            max_tokens = lengths.choose(max_tokens)
        if max_tokens < 1:  # a plain step with the full model
            record, pending = run.decode_one(model, cache, pending, sampling, generator, exit_rule.threshold)
            if lengths is not None:
                lengths.observe_plain(record.verify_seconds)
            yield record
            continue
        t0 = run.clock()
        drafted, dists = draft_tokens(draft, pending, position, cache, max_tokens,
                                      exit_rule.threshold, sampling, generator)
        truncate(cache, position)
        t1 = run.clock()
        accepted, pending = verify(model, pending, drafted, dists, draft.vocabulary, position, cache,
                                   sampling, generator)
        truncate(cache, position + 1 + accepted)
        t2 = run.clock()
        exit_rule.update(accepted, len(drafted))
        if lengths is not None:
            lengths.observe_draft(len(drafted), accepted, t1 - t0, t2 - t1)
        tokens = drafted[:accepted].tolist() + [int(pending)]
        yield run.commit(tokens, "speculate", len(drafted), accepted, t1 - t0, t2 - t1, exit_rule.threshold)
