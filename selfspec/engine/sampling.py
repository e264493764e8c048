"""Turning logits into tokens, and the speculative accept/reject rules.

Draft and full model go through the *same* `probabilities` processing, which is what makes the
speculative-sampling rule lossless for temperature, top-k and top-p.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from selfspec.engine.native_build import native_extension


@dataclass(frozen=True)
class Sampling:
    """Greedy when temperature is 0; otherwise sampling with the usual filters."""

    temperature: float = 0.0
    top_k: int = 0  # 0: no top-k filter
    top_p: float = 1.0  # 1.0: no nucleus filter
    seed: int | None = None

    def __post_init__(self) -> None:
        if not (self.temperature >= 0):
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be a non-negative integer, got {self.top_k}")
        if not (0 < self.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def generator(self, device: torch.device) -> torch.Generator | None:
        if self.greedy:
            return None
        generator = torch.Generator(device=device)
        if self.seed is None:
            generator.seed()
        else:
            generator.manual_seed(self.seed)
        return generator


def probabilities(logits: torch.Tensor, sampling: Sampling) -> torch.Tensor:
    """Next-token distribution(s) after temperature, top-k and top-p (last dimension = vocabulary)."""
    logits = logits.float() / sampling.temperature
    if sampling.top_k and sampling.top_k < logits.shape[-1]:
        kth = torch.topk(logits, sampling.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if sampling.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        # Keep a token while the mass before it is below top_p (the most likely token always stays).
        drop_sorted = (sorted_probs.cumsum(-1) - sorted_probs) >= sampling.top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        probs = probs.masked_fill(drop, 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def greedy_tokens(logits: torch.Tensor) -> torch.Tensor:
    """The argmax over the last dimension, taken in float32: widening is exact and keeps the first
    maximum, and on a CPU torch's argmax over 16-bit logits runs several times slower than the widening
    and the float32 argmax together (a 49k vocabulary: 160 against 33 us a row)."""
    return logits.float().argmax(-1)


def greedy_choice(logits: torch.Tensor, with_probability: bool) -> tuple[torch.Tensor, float | None]:
    """One row's greedy token (1,), as greedy_tokens takes it, and with `with_probability` its softmax probability:
    in one C++ call for a float32 row on a CPU (csrc/top_choice.cpp), where torch's half-dozen operations each cost
    tens of microseconds right after a draft token (docs/BENCHMARKS.md)."""
    choose = _top_choice() if logits.device.type == "cpu" and logits.dtype == torch.float32 else None
    if choose is not None and logits.dim() == 1 and logits.is_contiguous():
        index, probability = choose(logits)
        return index, probability if with_probability else None
    index = greedy_tokens(logits).view(1)
    return index, float(torch.softmax(logits.float(), -1)[index]) if with_probability else None


@functools.cache
def _top_choice():
    """csrc/top_choice.cpp's function, or None without the extension or AVX2 (then torch's operations)."""
    extension = native_extension()
    return extension.top_choice if extension is not None and extension.rows_attention_available() else None


def sample(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def accept_greedy(drafted: torch.Tensor, target_logits: torch.Tensor) -> tuple[int, torch.Tensor]:
    """Keep drafts while each equals the full model's argmax; the next token is the full model's own.

    drafted: (n,) draft tokens; target_logits: (n + 1, V) full-model logits at the pending token and
    each draft. Returns (number accepted, next token).
    """
    target = greedy_tokens(target_logits)
    accepted = int(torch.cumprod(drafted == target[:-1], dim=0).sum()) if len(drafted) else 0
    return accepted, target[accepted]


def accept_sampled(
    drafted: torch.Tensor,
    draft_probs: torch.Tensor,
    target_probs: torch.Tensor,
    generator: torch.Generator | None,
) -> tuple[int, torch.Tensor]:
    """Speculative sampling (Leviathan et al. 2023; Chen et al. 2023).

    drafted: (n,); draft_probs q: (n, V); target_probs p: (n + 1, V). Draft x_i is accepted with
    probability min(1, p(x_i) / q(x_i)); at the first rejection the token is drawn from
    norm(max(p - q, 0)); when all are accepted a bonus token is drawn from p. The result is
    distributed exactly as sampling from p alone.
    """
    n = len(drafted)
    if n:
        rows = torch.arange(n, device=drafted.device)
        p_x = target_probs[rows, drafted]
        q_x = draft_probs[rows, drafted]
        u = torch.rand(n, generator=generator, device=drafted.device)
        rejected = (u * q_x > p_x).nonzero()  # u < p/q  <=>  u*q < p  (no division by q = 0)
        if len(rejected):
            i = int(rejected[0, 0])
            residual = (target_probs[i] - draft_probs[i]).clamp_min(0)
            total = residual.sum()
            # p == q leaves no residual mass; then rejection had probability 0 and p itself is right.
            residual = residual / total if total > 0 else target_probs[i]
            return i, sample(residual, generator)
    return n, sample(target_probs[n], generator)
