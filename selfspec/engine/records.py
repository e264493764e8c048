"""The per-step record both decoders stream; every figure is computed from these (see metrics.py)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


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
    vetted: bool = False  # copies verified after the draft's first token agreed with them (one draft forward)

    @property
    def copied_accepted(self) -> int:
        return min(self.accepted, self.copied)

    @property
    def seconds(self) -> float:
        return self.draft_seconds + self.verify_seconds

    def to_dict(self) -> dict:
        return asdict(self)
