"""The step controller replayed over recorded texts at fixed costs: its decisions without the host's noise.

In a bench the same configuration moves by up to 9% in a category between identical runs (docs/BENCHMARKS.md),
so a change to the controller (engine/controller.py) cannot be judged by one run, and several runs take an hour.
Greedy decoding commits the same text whatever the steps verify, so what a step keeps depends only on the text,
the context's proposals and the draft's tokens. `record_transcript` decodes a prompt once, and at every position
also drafts K tokens from the same cache, as a step starting there would. `replay` then runs the real controller
over that text, taking each step's outcome from the transcript and its time from fixed `Costs`: a deterministic
answer to "how long would these plans take", to judge a change to the controller before a bench confirms it.

Approximations: the draft reading copies is taken to choose what it would have drafted there (the same tokens
through a wider product); tokens past the K recorded at a position are the draft's from a step starting further
on; the draft's exit rule is off (the low-bit draft that skips nothing has none); costs have no noise.
"""

from __future__ import annotations

import math
import random
from typing import Callable, NamedTuple, Sequence

import torch

from selfspec.engine.cache import truncate
from selfspec.engine.context import ContextIndex
from selfspec.engine.controller import Carried, DraftLength, Plan, guessed_reading, verify_costs
from selfspec.engine.decoding import draft_tokens, eos_token_ids
from selfspec.engine.draft import DraftModel
from selfspec.engine.devices import model_device
from selfspec.engine.runtime import Engine
from selfspec.engine.sampling import Sampling, greedy_tokens


class Transcript(NamedTuple):
    """A greedy decoding: `text[i]` the full model's i-th new token; `drafts[i]`, the tokens the draft drafts one
    after another in a step that starts at position i (the full model's keys of every earlier token behind it;
    empty for the prefill's token)."""
    prompt: tuple[int, ...]
    text: tuple[int, ...]
    drafts: tuple[tuple[int, ...], ...]

    def draft_token(self, start: int, offset: int) -> int | None:
        """The draft's token at position `start + offset` in a step from `start` that drafted (or read) the text
        up to it. Past the recorded drafts, the draft's from a step starting further on: its keys of the tokens
        before are the full model's there, not its own (an approximation)."""
        while start < len(self.drafts) and offset >= len(self.drafts[start]) > 0:
            start, offset = start + len(self.drafts[start]), offset - len(self.drafts[start])
        if start >= len(self.drafts) or not self.drafts[start]:
            return None
        return self.drafts[start][offset]


@torch.inference_mode()
def record_transcript(engine: Engine, draft: DraftModel, prompt_ids: Sequence[int], max_new_tokens: int,
                      max_draft: int) -> Transcript:
    """Decode `prompt_ids` greedily with the full model; before each step, draft `max_draft` tokens from the same
    cache, as a self-speculative step starting there would."""
    eos = eos_token_ids(engine.model)
    prompt = torch.tensor([list(prompt_ids)], dtype=torch.long, device=model_device(engine.model))
    with engine.request_cache(len(prompt_ids), max_new_tokens, max_draft) as cache:
        pending = greedy_tokens(engine.full(prompt, 0, cache, last_only=True)[-1])
        text, drafts, position = [int(pending)], [()], len(prompt_ids)
        while len(text) < max_new_tokens and text[-1] not in eos:
            drafted = draft_tokens(draft, pending, position, cache, max_draft, 0.0, Sampling(), None, engine).tokens
            truncate(cache, position)  # the full step writes the pending token's keys
            pending = greedy_tokens(engine.full(pending.view(1, 1), position, cache)[-1])
            text.append(int(pending))
            drafts.append(tuple(drafted.tolist()))
            position += 1
    return Transcript(tuple(prompt_ids), tuple(text), tuple(drafts))


class Costs(NamedTuple):
    """Seconds of a plain step, of a drafted token, of verifying n = 1, 2, ... proposed tokens, and of the draft's
    forward reading m = 1, 2, ... copies (none given: the controller's own guess before it measures one)."""
    plain: float
    draft: float
    verify: tuple[float, ...]  # verify[n - 1]: n proposed tokens
    reading: tuple[float, ...] = ()  # reading[m - 1]: m copies read

    def verify_seconds(self, n: int) -> float:
        """v(n), v(0) the plain step; past the widths given, along their average slope."""
        return verify_costs([(0, self.plain)] + list(enumerate(self.verify, 1)), n)[n]

    def reading_seconds(self, copies: int) -> float:
        """r(m), r(0) a drafted token; without readings given, a drafted token scaled as the full model's forward
        scales with width."""
        if self.reading:
            return verify_costs([(0, self.draft)] + list(enumerate(self.reading, 1)), copies)[copies]
        return guessed_reading(self.draft, self.verify_seconds(copies), self.plain)

    @staticmethod
    def from_bench(costs: dict, reading: Sequence[float] = ()) -> "Costs":
        """From one entry of a bench report's "costs" (full_seconds, draft_seconds, v per width over f), and
        r(1), r(2), ... over d where measured."""
        f, d = costs["full_seconds"], costs["draft_seconds"]
        widths = sorted(costs["v"], key=int)
        return Costs(f, d, tuple(f * costs["v"][n] for n in widths), tuple(d * r for r in reading))


class Replayed(NamedTuple):
    seconds: float  # the steps after the prefill, at the given costs
    tokens: int  # tokens they committed
    steps: tuple[tuple[Plan, int, float], ...]  # each step's plan (Plan(0, 0): a plain step), tokens committed, seconds

    def speedup(self, costs: Costs) -> float:
        """Against plain decoding of the same tokens at the same costs."""
        return self.tokens * costs.plain / self.seconds


def _kept(proposed: Sequence[int], actual: Sequence[int]) -> int:
    """How many leading proposed tokens are the actual ones."""
    kept = 0
    while kept < min(len(proposed), len(actual)) and proposed[kept] == actual[kept]:
        kept += 1
    return kept


def _drafts_kept(transcript: Transcript, start: int, offset: int, drafts: int) -> int:
    """Of `drafts` tokens drafted after the first `offset` tokens of a step from text position `start`, how many
    the full model keeps."""
    text = transcript.text
    kept = 0
    while (kept < drafts and start + offset + kept < len(text)
           and transcript.draft_token(start, offset + kept) == text[start + offset + kept]):
        kept += 1
    return kept


def _proposed(transcript: Transcript, start: int, plan: Plan, copies: Sequence[int], costs: Costs,
              jitter: Callable[[str], float]) -> tuple[int, int, float, float | None]:
    """What a step of `plan` from text position `start` verifies, as draft_tokens decides it: (copies kept for
    verification, tokens drafted, drafting seconds, of them the first forward's when it read the copies)."""
    if not plan.drafts:  # copies alone
        return plan.copies, 0, 0.0, None
    if plan.vetted and transcript.draft_token(start, 0) == copies[0]:  # the draft's first token is the first copy
        return plan.copies, 0, costs.draft * jitter("draft"), None
    if plan.vetted or not copies:
        return 0, plan.drafts, plan.drafts * costs.draft * jitter("draft"), None
    # The draft reads the copies, cut at the first it would not choose, and drafts after them.
    kept = _kept(copies, [transcript.draft_token(start, j) for j in range(len(copies))])
    reading = costs.reading_seconds(plan.copies) * jitter("reading")
    return kept, plan.drafts, reading + (plan.drafts - 1) * costs.draft * jitter("draft"), reading


def replay(transcript: Transcript, costs: Costs, max_draft: int, context_tokens: int,
           lengths: DraftLength | None = None, noise: Callable[[str], float] | None = None) -> tuple[Replayed, DraftLength]:
    """Decode `transcript` again with the controller (`lengths`, or a new one), as decoding._speculating does.
    `noise(part)`: a factor on each timed part of a step, "plain", "draft", "reading" or "verify" (the host's
    jitter and stalls; None: none). Returns what
    it did and the controller, whose `carried()` starts the next prompt as in a bench."""
    jitter = noise or (lambda part: 1.0)
    lengths = lengths or DraftLength(max_draft)
    text = transcript.text
    context = ContextIndex(transcript.prompt) if context_tokens else None
    if context is not None:
        context.extend(text[:1])
    done, seconds, steps = 1, 0.0, []
    while done < len(text):
        left = len(text) - done - 1
        proposal, match = ([], 0) if context is None else context.propose_matched(min(context_tokens, left))
        plan = lengths.plan(left, len(proposal), context_tokens, match)
        ahead = text[done:]
        copies = proposal[:plan.copies]
        if plan.copies + plan.drafts < 1:
            step_seconds, committed = costs.plain * jitter("plain"), 1
            lengths.observe_plain(step_seconds)
        else:
            n_copied, drafts, drafting, reading = _proposed(transcript, done, plan, copies, costs, jitter)
            accepted = _kept(copies[:n_copied], ahead)
            if accepted == n_copied:
                accepted += _drafts_kept(transcript, done, n_copied, drafts)
            verify = costs.verify_seconds(n_copied + drafts) * jitter("verify")
            step_seconds, committed = drafting + verify, min(accepted + 1, len(ahead))
            lengths.observe_step(n_copied, drafts, accepted, drafting, verify, reading)
        if context is not None:
            lengths.observe_copies(proposal, list(ahead[:committed]), match)
            context.extend(ahead[:committed])
        seconds += step_seconds
        steps.append((plan, committed, step_seconds))
        done += committed
    return Replayed(seconds, len(text) - 1, tuple(steps)), lengths


def host_noise(seed: int, spread: float = 0.05, stall_odds: float = 0.03, stall: float = 1.5) -> Callable[[str], float]:
    """Factors like a shared host's on a timed part of a step: a few percent of jitter, and now and then a stall."""
    rng = random.Random(seed)
    return lambda part: math.exp(rng.gauss(0.0, spread)) * (stall if rng.random() < stall_odds else 1.0)


def replay_suite(transcripts: Sequence[Transcript], costs: Callable[[int], Costs], max_draft: int,
                 context_tokens: int, carried: Carried | None = None,
                 noise: Callable[[str], float] | None = None) -> list[Replayed]:
    """Each transcript in turn (`costs(i)` for the i-th), each run starting from what the last one left, as
    one bench method's runs do."""
    out = []
    for i, transcript in enumerate(transcripts):
        lengths = DraftLength(max_draft)
        if carried is not None:
            lengths.start_from(carried)
        replayed, lengths = replay(transcript, costs(i), max_draft, context_tokens, lengths, noise)
        carried = lengths.carried()
        out.append(replayed)
    return out
