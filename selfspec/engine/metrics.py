"""Every figure computed from step records, in one place: the CLI, the app, `bench` and `search` use these.

- `summarize`: one run as a front end reports it (tokens/s over the whole run, prefill included).
- `decode_metrics`: one or more runs after their prefill, which is the same for every decoder and so
  is left out when decoders are compared: decode time per token, acceptance, tokens per verification,
  draft cost per drafted token, verification cost per step.
- `acceptance_per_token`: the cost model's per-token acceptance a (see bench/costmodel.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

from selfspec.engine.records import StepRecord


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


@dataclass(frozen=True)
class Summary:
    new_tokens: int
    seconds: float
    tokens_per_second: float
    drafted: int
    accepted: int
    verifications: int
    plain_steps: int  # one-token full-model steps after the prefill (a self-speculative run's undrafted steps)
    acceptance_rate: float | None  # accepted / drafted
    mean_accepted_tokens: float | None  # tokens committed per verification, correction/bonus included
    draft_seconds: float
    verify_seconds: float
    copied: int = 0  # of the drafted tokens, those copied from the context
    copied_accepted: int = 0
    copy_acceptance_rate: float | None = None  # per source: copied tokens kept / copied
    draft_acceptance_rate: float | None = None  # model-drafted tokens kept / model-drafted

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(records: Iterable[StepRecord]) -> Summary:
    records = list(records)
    new_tokens = sum(len(r.token_ids) for r in records)
    seconds = records[-1].elapsed_seconds if records else 0.0
    steps = decode_metrics([records])
    return Summary(
        new_tokens=new_tokens,
        seconds=seconds,
        tokens_per_second=new_tokens / seconds if seconds > 0 else 0.0,
        drafted=steps.drafted,
        accepted=steps.accepted,
        verifications=steps.verifications,
        plain_steps=steps.decodes,
        acceptance_rate=steps.acceptance,
        mean_accepted_tokens=steps.mean_accepted_tokens,
        draft_seconds=sum(r.draft_seconds for r in records),
        verify_seconds=sum(r.verify_seconds for r in records),
        copied=steps.copied,
        copied_accepted=steps.copied_accepted,
        copy_acceptance_rate=steps.copy_acceptance,
        draft_acceptance_rate=steps.model_draft_acceptance,
    )


@dataclass(frozen=True)
class DecodeMetrics:
    """Totals over the steps after the prefill of one or more runs, and the figures built from them."""

    tokens: int  # committed after the prefill
    seconds: float  # wall time after the prefill, every step's overhead included
    decodes: int  # single full-model token steps
    decode_seconds: float  # their full-model time
    verifications: int  # draft-and-verify steps
    drafted: int
    accepted: int
    committed: int  # tokens committed by verifications (accepted drafts plus one full-model token each)
    draft_seconds: float
    verify_seconds: float  # of verifications only
    draft_lengths: tuple[int, ...]  # tokens drafted by each verification, in order
    copied: int = 0  # of `drafted`, tokens copied from the context (no forward pass: not in draft_seconds)
    copied_lengths: tuple[int, ...] = ()  # of each verification's drafted tokens, those copied
    copied_accepted: int = 0
    vetted: tuple[bool, ...] = ()  # of each verification: copies the draft's first token vetted (one forward)

    # The rates, None where nothing was counted.
    seconds_per_token = property(lambda m: _ratio(m.seconds, m.tokens))
    acceptance = property(lambda m: _ratio(m.accepted, m.drafted))  # drafts accepted / drafted
    # Tokens committed per verification, the correction or bonus token included.
    mean_accepted_tokens = property(lambda m: _ratio(m.committed, m.verifications))
    mean_drafted = property(lambda m: _ratio(m.drafted, m.verifications))
    # Per source: tokens copied from the context, and tokens the draft model proposed.
    copy_acceptance = property(lambda m: _ratio(m.copied_accepted, m.copied))
    model_draft_acceptance = property(lambda m: _ratio(m.accepted - m.copied_accepted, m.drafted - m.copied))
    # What one drafted token, one verification forward (whatever its length) and one plain
    # full-model decode step cost, as the loop paid them.
    draft_seconds_per_token = property(lambda m: _ratio(m.draft_seconds, m.drafted - m.copied + sum(m.vetted)))
    verify_seconds_per_step = property(lambda m: _ratio(m.verify_seconds, m.verifications))
    full_seconds_per_token = property(lambda m: _ratio(m.decode_seconds, m.decodes))


def decode_metrics(runs: Iterable[Sequence[StepRecord]]) -> DecodeMetrics:
    """Each run is one decoder's records in order, the prefill first; the prefill is left out."""
    runs = [list(run) for run in runs if run]
    steps = [r for run in runs for r in run if r.kind != "prefill"]
    decodes = [r for r in steps if r.kind == "decode"]
    verifications = [r for r in steps if r.kind == "speculate"]
    return DecodeMetrics(
        tokens=sum(len(r.token_ids) for r in steps),
        seconds=sum(run[-1].elapsed_seconds - _prefill_end(run) for run in runs),
        decodes=len(decodes),
        decode_seconds=sum(r.verify_seconds for r in decodes),
        verifications=len(verifications),
        drafted=sum(r.drafted for r in verifications),
        accepted=sum(r.accepted for r in verifications),
        committed=sum(len(r.token_ids) for r in verifications),
        draft_seconds=sum(r.draft_seconds for r in verifications),
        verify_seconds=sum(r.verify_seconds for r in verifications),
        draft_lengths=tuple(r.drafted for r in verifications),
        copied=sum(r.copied for r in verifications),
        copied_lengths=tuple(r.copied for r in verifications),
        copied_accepted=sum(r.copied_accepted for r in verifications),
        vetted=tuple(r.vetted for r in verifications),
    )


def _prefill_end(run: Sequence[StepRecord]) -> float:
    first = run[0]
    return first.elapsed_seconds if first.kind == "prefill" else first.elapsed_seconds - first.seconds


def acceptance_per_token(records: Iterable[StepRecord]) -> float | None:
    """Per-token acceptance a, estimated from verification steps.

    Under the cost model a step's accepted count is geometric, cut off at the drafted count; the
    maximum likelihood estimate is accepted / (accepted + rejections), a rejection being a step that
    kept fewer drafts than it proposed.
    """
    steps = [r for r in records if r.kind == "speculate" and r.drafted > 0]
    if not steps:
        return None
    accepted = sum(r.accepted for r in steps)
    rejections = sum(1 for r in steps if r.accepted < r.drafted)
    return _ratio(accepted, accepted + rejections)
