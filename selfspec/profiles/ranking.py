"""The greedy search's cheap objective: teacher forcing ranks sublayers by how little skipping them
changes the full model's next-token choices (no decoding, one forward per sequence per candidate)."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from selfspec.engine.architectures import decoder_layers
from selfspec.engine.cache import new_cache
from selfspec.engine.decoding import autoregressive, forward_full
from selfspec.engine.devices import model_device
from selfspec.engine.draft import DraftModel
from selfspec.profiles.schema import SkipProfile
from selfspec.profiles.sublayers import sublayers_profile

RANKING_PROMPTS = 3
RANKING_CONTEXT = 8  # prompt tokens kept before each continuation
RANKING_CONTINUATION = 24  # full-model tokens after each


def ranking_text(model: nn.Module, prompts, max_new_tokens: int) -> list[list[int]]:
    """What the ranking scores: a few prompts' tails with the full model's continuations, as one sequence.

    A forward over many tokens is compute-bound and costs many decode steps, so the text is kept short:
    the end of each prompt (context) and the continuation, where decoding actually happens.
    """
    prompts = list(prompts)[:: max(1, len(prompts) // RANKING_PROMPTS)][:RANKING_PROMPTS]
    texts = [p[-RANKING_CONTEXT:] + c
             for p, c in zip(prompts, continuations(model, prompts, min(max_new_tokens, RANKING_CONTINUATION)))]
    return [[t for text in texts for t in text]]

def continuations(model: nn.Module, prompts, max_new_tokens: int) -> list[list[int]]:
    """The full model's greedy continuation of every prompt (the text teacher forcing scores)."""
    return [[t for r in autoregressive(model, p, max_new_tokens) for t in r.token_ids] for p in prompts]



@torch.inference_mode()
@torch.inference_mode()
def full_choices(model: nn.Module, sequences: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """The full model's next-token argmax at every position of every sequence."""
    device = model_device(model)
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
