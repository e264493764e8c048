"""Steps replayed from CUDA graphs captured by hand: per call, the host copies the step's inputs and
launches one replay.

torch.compile's reduce-overhead mode replays CUDA graphs too, but before each replay it runs dynamo's
guards and the cudagraph trees' checks of every input (each weight of the model is one) while the GPU
waits for the next step; a graph captured here replays with none of that (docs/BENCHMARKS.md measures
the difference). A graph holds the addresses of everything its step touches: the weights (they never
move), the draft's modules, the request's static cache (so a graph belongs to one cache, and the engine
reuses caches between requests), and the step's input buffers, into which the tokens and positions are
copied before each replay.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

import torch


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    inputs: tuple[torch.Tensor, ...]  # copied into before each replay
    output: torch.Tensor  # overwritten by each replay


class CapturedGraphs:
    """One engine's captured steps, each under a key naming the step and the objects it holds."""

    def __init__(self):
        self._graphs: dict[Hashable, _Graph] = {}
        self._pool = None  # one memory pool for all: the steps of an engine never run at once
        self._lock = threading.Lock()  # a replay's output is read before another replay may overwrite it

    def run(self, key: Hashable, holds: Sequence[object], step: Callable[..., torch.Tensor],
            inputs: tuple[torch.Tensor, ...], restore: Callable[[], None]) -> tuple[torch.Tensor, bool]:
        """`step(*inputs)` through its graph, captured on first use: (output, whether it captured now).

        `holds`: the objects whose tensors the graph uses, besides the weights (a cache, a draft); the graph
        is dropped when one of them is. `restore()` puts the cache back as it was before the step: a capture
        runs the step twice for real first (the first call may compile), then once in the graph."""
        with self._lock:
            graph = self._graphs.get(key)
            if graph is None:
                return self._capture(key, holds, step, inputs, restore).output.clone(), True
            for buffer, value in zip(graph.inputs, inputs):
                buffer.copy_(value)
            graph.graph.replay()
            return graph.output.clone(), False

    def _capture(self, key, holds, step, inputs, restore) -> _Graph:
        buffers = tuple(x.clone(memory_format=torch.contiguous_format) for x in inputs)  # whatever the caller's strides
        side = torch.cuda.Stream()  # warm-up off the main stream, as torch.cuda.graph's docs ask
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                step(*buffers)
                restore()
        torch.cuda.current_stream().wait_stream(side)
        # Graphs share the pool of the graphs still held. Once the last of them is dropped, a pool that still
        # has live allocations in it (use count 0) cannot be captured into again: torch's allocator asserts
        # (`use_count > 0`). So a capture after that starts a pool of its own.
        pool = self._pool if self._graphs else None
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            output = step(*buffers)
        self._pool = pool or graph.pool()
        graph.replay()  # the capture recorded the step without running it
        self._graphs[key] = captured = _Graph(graph, buffers, output)
        for held in holds:
            weakref.finalize(held, self._graphs.pop, key, None)
        return captured
