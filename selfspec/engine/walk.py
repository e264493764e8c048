"""A decoder's forward pass as a plain loop over its sublayers, at explicit positions, for batch 1.

Both roles run through it: the draft (some sublayers skipped, maybe on low-bit copies) and the engine's
full-model forwards (nothing skipped). transformers' own forward does more per step than a decoding step
needs (mask-building functions, output classes, keyword arguments threaded through every module), and
at batch 1 on a CPU each of those costs microseconds that no product amortises. The loop does only the
layers' arithmetic, through architectures.py's sublayer functions, which keep each layer's own operations
in their own order: with nothing skipped, the logits are the model's own, bit for bit (tests/test_walk.py).

Masks are built from positions, never from cache lengths: the cache of a layer the draft skipped is
shorter than the others, and a static cache returns its whole buffer, stale entries included -- except
where the walk has it return only the filled prefix (eager on a CPU through sdpa), which is then exactly
what transformers' own dynamic cache would hold, so a one-token step needs no mask at all.
"""

from __future__ import annotations

import copy
import inspect
from contextlib import nullcontext
from typing import Callable, Iterable

import torch
from torch import nn

from selfspec.engine.architectures import (
    attention_sublayer,
    attention_window,
    decoder,
    decoder_layers,
    direct_sublayers,
    layer_type,
    mlp_sublayer,
    rolled_rotary,
)
from selfspec.engine.cache import is_static, layer_length
from selfspec.engine.fused_sublayers import fused_attention_sublayer, fused_mlp_sublayer
from selfspec.engine.native_layers import cache_ready, draft_layers, draft_token_path, full_layers


def sublayer_functions(body: nn.Module, fused: bool, choose_forms: bool = True) -> tuple[Callable, Callable, bool]:
    """(attention, MLP) sublayer functions for `body`'s layers, and whether they take their rotary as
    `rolled_rotary` prepares it: fused ones for layers prepared by fuse_projections, the modules' operations
    called directly where architectures.py can (`choose_forms`: in the attention and norm forms this machine's
    timing picks), else the layers' own modules."""
    if fused:
        return fused_attention_sublayer, fused_mlp_sublayer, True
    direct = direct_sublayers(body, choose_forms)
    return (*direct, True) if direct else (attention_sublayer, mlp_sublayer, False)


class LayerWalk:
    def __init__(self, body: nn.Module, config, head: Callable[[torch.Tensor], torch.Tensor], fused: bool = False,
                 choose_forms: bool = True):
        """`body`: the model, or a shadow of it sharing its config (low-bit copies, chosen products); `head`:
        hidden states -> logits; `fused`: `body`'s layers were prepared by fused_sublayers.fuse_projections;
        `choose_forms`: False keeps transformers' attention and norm forms (attention_forms.py, rms_norms.py), bit for bit."""
        self.decoder = decoder(body)
        self.head = head
        self._layers = list(decoder_layers(body))
        self._attention, self._mlp, self._rolls_rotary = sublayer_functions(body, fused, choose_forms)
        # Fused layers take their stream as (q, hidden) rows, the low-bit products' own shape (batch 1):
        # no reshape on the way into each product and back out of it, a few microseconds a draft layer.
        self._rows = fused
        self.forms: dict[str, str] = dict(getattr(self._attention, "forms", {}))  # what timing chose, for reports
        self._attn_impl = getattr(config, "_attn_implementation", "sdpa") or "sdpa"
        self._rotary_by_type = "layer_type" in inspect.signature(self.decoder.rotary_emb.forward).parameters
        self._layer_types = [layer_type(config, i) for i in range(len(self._layers))]
        self._windows = [attention_window(config, i) for i in range(len(self._layers))]
        self._windowless = all(window is None for window in self._windows)
        self._softcap = getattr(config, "final_logit_softcapping", None)
        # Layers of one kind run in C++ where it was built (native_layers.py): the same operations.
        self._native = None
        if len(set(self._layer_types)) == 1 and self._windowless:
            self._native = draft_layers(self._layers) if fused else full_layers(self._layers, self.forms)
        # A draft token in one C++ call where its layers run in buffers (native_layers.DraftTokenPath).
        self._token_path = None
        if fused and self._softcap is None and not self._rotary_by_type:
            self._token_path = draft_token_path(self._native, self.decoder, head)
        self._use_plan(self._plan_for((), ()))

    def _plan_for(self, skip_attn: Iterable[int], skip_mlp: Iterable[int]) -> list:
        """Planned once (not per step): which sublayers run in each layer."""
        skip_attn, skip_mlp = set(skip_attn), set(skip_mlp)
        return [(i, layer, i not in skip_attn, i not in skip_mlp) for i, layer in enumerate(self._layers)]

    @property
    def layer_loop(self) -> str:
        return "python" if self._native is None else self._native.name

    def _use_plan(self, plan: list) -> None:
        self._plan = plan
        self._native_plan = [int(attn) | 2 * int(mlp) for _, _, attn, mlp in plan]  # bit 0 attention, 1 MLP

    def skipping(self, attn: Iterable[int], mlp: Iterable[int]) -> "LayerWalk":
        """The same walk (its modules shared) bypassing these layers' attention and MLP sublayers."""
        twin = copy.copy(self)
        twin._use_plan(self._plan_for(attn, mlp))
        return twin

    def __call__(self, input_ids: torch.Tensor, position_ids: torch.Tensor, cache,
                 last_only: bool = False, from_start: bool = False) -> torch.Tensor:
        """Logits (1, q, V) for `input_ids` (1, q) at absolute `position_ids`, appending to `cache` (only the
        last position's with `last_only`); `from_start`: the positions begin at 0 (a prefill)."""
        hidden = self.decoder.embed_tokens(input_ids)
        if self._rows:
            hidden = hidden[0]
        rotary = self.decoder.rotary_emb
        if self._rotary_by_type:
            position_embeddings = {t: rotary(hidden, position_ids, t) for t in set(self._layer_types)}
        else:
            shared = rotary(hidden, position_ids)
            position_embeddings = {t: shared for t in set(self._layer_types)}
        if self._rolls_rotary:
            position_embeddings = {t: rolled_rotary(e) for t, e in position_embeddings.items()}
        masks = {}  # one per distinct (key length, window) within this forward
        attended = self._attended_keys(position_ids, cache)
        # Every layer reads the same `attended` keys: without windows, one mask serves them all.
        uniform = bool(attended) and self._windowless
        one_mask = self._mask(0, position_ids, cache, hidden.dtype, masks, from_start, attended) if uniform else None
        with cache.attending(attended) if attended else nullcontext():
            out = None
            if self._native is not None and uniform and cache_ready(cache):
                out = self._native(hidden, position_embeddings[self._layer_types[0]], one_mask, attended, cache,
                                   self._native_plan)
            hidden = out if out is not None else self._python_layers(
                hidden, position_embeddings, one_mask, uniform, attended, position_ids, cache, masks, from_start)
        if last_only:
            hidden = hidden[..., -1:, :]
        logits = self.head(self.decoder.norm(hidden))
        if self._rows:
            logits = logits[None]
        if self._softcap is not None:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        return logits

    def token_logits(self, token: torch.Tensor, position: int, cache) -> torch.Tensor | None:
        """Logits (V,) for one token (1, 1) at `position` in one C++ call, appending to a static `cache`; None
        where that path does not run (then call the walk)."""
        if self._token_path is None or not cache_ready(cache):
            return None
        return self._token_path(token, position, cache, self._native_plan)

    def _python_layers(self, hidden, position_embeddings, one_mask, uniform, attended, position_ids, cache, masks,
                       from_start):
        for i, layer, run_attn, run_mlp in self._plan:
            if run_attn:
                mask = one_mask if uniform else self._mask(i, position_ids, cache, hidden.dtype, masks,
                                                         from_start, attended)
                hidden = self._attention(
                    layer, hidden, position_embeddings[self._layer_types[i]], mask, position_ids, cache
                )
            if run_mlp:
                hidden = self._mlp(layer, hidden)
        return hidden

    def _attended_keys(self, position_ids: torch.Tensor, cache) -> int | None:
        """How many keys of a static cache this forward reads, where it can read just the filled prefix (up
        to its last position): eager on a CPU, where the position is a number at hand, through sdpa, whose
        sums over the masked rest were zeros (eager attention's softmax would sum in another order). None:
        the whole buffer (compiled graphs are specialised to its shape; on a GPU reading the position waits)."""
        if (not is_static(cache) or self._attn_impl != "sdpa" or position_ids.device.type != "cpu"
                or torch.compiler.is_compiling()):
            return None
        return int(position_ids[0, -1]) + 1

    def _mask(self, layer_index: int, position_ids: torch.Tensor, cache, dtype: torch.dtype, masks: dict,
              from_start: bool = False, attended: int | None = None):
        """Attention mask for one layer, over *that layer's* keys, from positions; None when none is needed.

        A dynamic cache returns the layer's own keys (shorter for layers the draft skipped); a static
        cache returns the `attended` prefix of its buffer, or else its whole buffer, whose entries past
        the query's position are stale or empty.
        """
        query_len = position_ids.shape[-1]
        whole_buffer = is_static(cache) and attended is None
        if whole_buffer:
            kv_len = cache.capacity
        else:
            kv_len = attended or layer_length(cache, layer_index) + query_len
        window = self._windows[layer_index]
        needs_window = window is not None and (whole_buffer or kv_len > window)
        if query_len == 1 and not needs_window and not whole_buffer:
            return None  # one query attends to every key it is given (the causal past): no mask
        if self._attn_impl not in ("sdpa", "eager"):
            return None  # flash-style kernels apply causality and windows themselves
        if (from_start and is_static(cache) and query_len > 1 and self._attn_impl == "sdpa"
                and (window is None or query_len <= window)):
            # A prefill: sdpa then attends causally over the first q keys only, as transformers' forward
            # does (a mask over the whole buffer gives the same values up to rounding).
            return None
        key = (kv_len, window if needs_window else None)
        if key not in masks:
            masks[key] = self._position_mask(position_ids, kv_len, key[1], dtype)
        return masks[key]

    def _position_mask(self, position_ids: torch.Tensor, kv_len: int, window: int | None, dtype: torch.dtype):
        key_pos = torch.arange(kv_len, device=position_ids.device)
        query_pos = position_ids[0, :, None]
        allowed = key_pos[None, :] <= query_pos
        if window is not None:
            allowed &= key_pos[None, :] > query_pos - window
        allowed = allowed[None, None]
        if self._attn_impl == "eager":
            return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
                ~allowed, torch.finfo(dtype).min
            )
        return allowed
