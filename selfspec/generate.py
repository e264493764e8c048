"""One call from prompt to text: runs a decoder to the end and summarises its records."""

from __future__ import annotations

from dataclasses import dataclass

from selfspec.engine.decoding import autoregressive, self_speculative
from selfspec.engine.settings import DraftSettings
from selfspec.engine.draft import DraftModel
from selfspec.models.loading import LanguageModel
from selfspec.profiles.schema import SkipProfile
from selfspec.engine.metrics import Summary, summarize
from selfspec.engine.records import StepRecord
from selfspec.engine.sampling import Sampling


@dataclass(frozen=True)
class GenerationResult:
    text: str
    token_ids: list[int]  # generated ids only
    summary: Summary
    records: list[StepRecord]

    def to_dict(self, with_steps: bool = False) -> dict:
        out = {"token_ids": self.token_ids, "text": self.text, **self.summary.to_dict(),
               "seconds": self.summary.seconds}
        if with_steps:
            out["steps"] = [r.to_dict() for r in self.records]
        return out


def generate(
    lm: LanguageModel,
    prompt: str | list[int],
    profile: SkipProfile | DraftModel | None = None,
    max_new_tokens: int = 128,
    sampling: Sampling = Sampling(),
    settings: DraftSettings = DraftSettings(),
    raw: bool = False,
) -> GenerationResult:
    """Generate to the end: self-speculatively with `profile`, autoregressively without one."""
    prompt_ids = prompt if isinstance(prompt, list) else lm.encode(prompt, raw=raw)
    if profile is None:
        steps = autoregressive(lm.model, prompt_ids, max_new_tokens, sampling, engine=lm.engine)
    else:
        steps = self_speculative(lm.model, prompt_ids, profile, max_new_tokens, sampling, settings, engine=lm.engine)
    records = list(steps)
    token_ids = [t for r in records for t in r.token_ids]
    return GenerationResult(lm.decode(token_ids), token_ids, summarize(records), records)
