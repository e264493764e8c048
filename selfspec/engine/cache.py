"""The one KV cache that draft and verify share, and its per-layer rollback.

Two kinds: `PositionalCache` (static_cache.py), preallocated for the request, the default; and
transformers' `DynamicCache`, which grows by concatenation, the fallback. A layer-skipping draft
leaves layers at different lengths (a skipped attention sublayer writes no K/V), so rollback trims
every layer on its own to an absolute length instead of using `Cache.crop`, which removes the same
count from every layer.
"""

from __future__ import annotations

from transformers import DynamicCache

from selfspec.engine.static_cache import PositionalCache


def new_cache(num_layers: int | None = None, capacity: int | None = None) -> DynamicCache | PositionalCache:
    """A static cache of `capacity` positions when both are given, else a dynamic one."""
    if num_layers is not None and capacity is not None:
        return PositionalCache(num_layers, capacity)
    # No config on purpose: every layer keeps full-length K/V (sliding-window layers included), so
    # any draft can be rolled back; sliding windows are enforced by the attention masks instead.
    return DynamicCache()


def is_static(cache) -> bool:
    return isinstance(cache, PositionalCache)


def layer_length(cache, layer_index: int) -> int:
    if layer_index >= len(cache.layers):
        return 0
    if is_static(cache):
        return cache.layer_length(layer_index)
    return cache.layers[layer_index].get_seq_length()


def truncate(cache, length: int) -> None:
    """Keep the first `length` positions of every layer (layers already shorter are left alone)."""
    if is_static(cache):
        cache.rollback(length)
        return
    for layer in cache.layers:
        if getattr(layer, "is_initialized", False) and layer.keys is not None and layer.keys.shape[-2] > length:
            layer.keys = layer.keys[..., :length, :]
            layer.values = layer.values[..., :length, :]
