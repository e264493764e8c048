"""A KV cache preallocated for one request: positions index it, rollback only moves a length.

Every layer holds K/V for the whole request (prompt + new tokens + K + 1 positions), full length even
for sliding-window layers, so that any draft can be rolled back; windows are enforced by the masks.
The layers are transformers' own `StaticLayer`s: each writes a new block at its own filled length and
returns its whole buffer. In our decoders a layer's filled length always equals the position of the
block it receives (prefill and verification run every layer from the committed length; a draft runs
the same layers at every step, from the committed length), so positions index the buffer; a layer the
draft skips simply stays at the committed length. Rolling back sets each filled length to at most the
committed length, in place, so the tensors keep their addresses (compiled graphs and CUDA graphs stay
valid); the entries past it are stale, hidden by position-built masks and overwritten next time.

A forward that knows how far its positions reach (the eager walk on a CPU, `attending`) reads only the
filled prefix of each buffer: attention over the whole buffer costs in proportion to the capacity, and
at batch 1 on a CPU that was most of a layer's attention (docs/BENCHMARKS.md). Compiled and GPU steps
keep the whole buffer, whose shape their graphs are specialised to.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from transformers.cache_utils import Cache, StaticLayer


class PositionalCache(Cache):
    def __init__(self, num_layers: int, capacity: int):
        if capacity < 1:
            raise ValueError(f"a cache must hold at least one position, got {capacity}")
        # A request never writes past `capacity` (the decoders size it): no per-layer check here,
        # which on a GPU would cost a device sync per layer and step.
        # Made in inference mode, like every tensor a forward gives it: compiled graphs guard on that.
        with torch.inference_mode():
            super().__init__(layers=[StaticLayer(max_cache_len=capacity) for _ in range(num_layers)])
        self.capacity = capacity
        self.attended: int | None = None  # keys a forward reads (None: the whole buffer)

    @contextmanager
    def attending(self, keys: int) -> Iterator[None]:
        """During one forward, `update` returns the first `keys` positions of each buffer, not all of it."""
        self.attended = keys
        try:
            yield
        finally:
            self.attended = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        if self.attended is None:
            return super().update(key_states, value_states, layer_idx, *args, **kwargs)
        layer = self.layers[layer_idx]
        if not layer.is_initialized:
            super().update(key_states, value_states, layer_idx, *args, **kwargs)
        else:
            # Where StaticLayer.update would write (a layer's filled length is the block's first position),
            # by slicing: no position tensor to build and no index_copy_, a few microseconds a layer.
            width = key_states.shape[-2]
            layer.keys.narrow(2, self.attended - width, width).copy_(key_states)
            layer.values.narrow(2, self.attended - width, width).copy_(value_states)
            layer.cumulative_length.add_(width)
        return layer.keys.narrow(2, 0, self.attended), layer.values.narrow(2, 0, self.attended)

    @torch.inference_mode()
    def rollback(self, length: int) -> None:
        """Keep the first `length` positions of every layer (layers already shorter are left alone)."""
        for layer in self.layers:
            if layer.is_initialized:
                layer.cumulative_length.clamp_(max=length)

    def layer_length(self, layer_index: int) -> int:
        layer = self.layers[layer_index]
        return int(layer.get_seq_length()) if layer.is_initialized else 0

