"""ZeroGPU: a GPU is lent per call of a function marked `@spaces.GPU(duration=...)`; elsewhere a no-op.

The duration asked for is the call's worst case, from its token budget: ZeroGPU schedules shorter
requests sooner, and a call that outlives its duration is cut off.
"""

from __future__ import annotations

from typing import Callable

START_SECONDS = 20  # prefill, the first kernels' one-off costs, moving results back
SECONDS_PER_TOKEN = 0.06  # both decoders, a 7-8B model in bf16, eager (docs/BENCHMARKS.md: 16-19 tok/s on H100/H200)
MAX_SECONDS = 300


def race_seconds(prompt=None, model=None, profile_file=None, max_new_tokens=96, *rest, **named) -> int:
    """The GPU time one race may take: both methods decode up to `max_new_tokens` tokens."""
    try:
        tokens = int(named.get("max_new_tokens", max_new_tokens))
    except (TypeError, ValueError):
        tokens = 96
    return int(min(MAX_SECONDS, START_SECONDS + 2 * max(1, tokens) * SECONDS_PER_TOKEN))


def gpu_call(fn: Callable) -> Callable:
    """`spaces.GPU(duration=race_seconds)` when the `spaces` package is there (a Space), else `fn` unchanged."""
    try:
        import spaces
    except ImportError:
        return fn
    return spaces.GPU(duration=race_seconds)(fn)
