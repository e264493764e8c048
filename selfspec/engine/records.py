"""The per-step records both decoders stream, and the summary computed from them.

The CLI, the benchmarks and the app all consume these records the same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable


@dataclass(frozen=True)
class StepRecord:
    step: int  # 0 is the prefill
    kind: str  # "prefill", "decode" (a plain step: one full-model token) or "speculate" (draft + verify)
    token_ids: tuple[int, ...]  # tokens committed by this step
    drafted: int  # draft tokens proposed
    accepted: int  # draft tokens the full model kept
    draft_seconds: float
    verify_seconds: float  # full-model time (the prefill or single decode too)
    elapsed_seconds: float  # since the decoder started, this step included
    gamma: float | None = None  # draft-exit threshold after this step (None: not speculative)
    copied: int = 0  # of the `drafted` tokens, how many were copied from the context (they come first)

    @property
    def copied_accepted(self) -> int:
        return min(self.accepted, self.copied)

    @property
    def seconds(self) -> float:
        return self.draft_seconds + self.verify_seconds

    def to_dict(self) -> dict:
        return asdict(self)


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

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(records: Iterable[StepRecord]) -> Summary:
    records = list(records)
    new_tokens = sum(len(r.token_ids) for r in records)
    seconds = records[-1].elapsed_seconds if records else 0.0
    speculative = [r for r in records if r.kind == "speculate"]
    drafted = sum(r.drafted for r in speculative)
    accepted = sum(r.accepted for r in speculative)
    return Summary(
        new_tokens=new_tokens,
        seconds=seconds,
        tokens_per_second=new_tokens / seconds if seconds > 0 else 0.0,
        drafted=drafted,
        accepted=accepted,
        verifications=len(speculative),
        plain_steps=sum(1 for r in records if r.kind == "decode"),
        acceptance_rate=accepted / drafted if drafted else None,
        mean_accepted_tokens=(
            sum(len(r.token_ids) for r in speculative) / len(speculative) if speculative else None
        ),
        draft_seconds=sum(r.draft_seconds for r in records),
        verify_seconds=sum(r.verify_seconds for r in records),
    )
