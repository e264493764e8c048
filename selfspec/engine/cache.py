"""The one KV cache that draft and verify share, and its per-layer rollback.

A layer-skipping draft leaves layers at different lengths (a skipped attention sublayer writes no
K/V), so rollback trims every layer on its own to an absolute length instead of using
`Cache.crop`, which removes the same count from every layer.
"""

from __future__ import annotations

from transformers import DynamicCache


def new_cache() -> DynamicCache:
    # No config on purpose: every layer keeps full-length K/V (sliding-window layers included), so
    # any draft can be rolled back; sliding windows are enforced by the attention masks instead.
    return DynamicCache()


def layer_length(cache: DynamicCache, layer_index: int) -> int:
    if layer_index >= len(cache.layers):
        return 0
    return cache.layers[layer_index].get_seq_length()


def truncate(cache: DynamicCache, length: int) -> None:
    """Keep the first `length` positions of every layer (layers already shorter are left alone)."""
    for layer in cache.layers:
        if getattr(layer, "is_initialized", False) and layer.keys is not None and layer.keys.shape[-2] > length:
            layer.keys = layer.keys[..., :length, :]
            layer.values = layer.values[..., :length, :]
