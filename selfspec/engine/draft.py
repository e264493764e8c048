"""The draft: the same model with chosen attention/MLP sublayers bypassed, optionally reading
low-bit copies of its linear weights.

`DraftModel` is a read-only view. It walks the model's own modules in its own small forward pass,
so it registers no hooks and flips no switches: the model is exactly as it was after every call,
whatever happens during one. With `weights="full"` (the paper's draft) it copies nothing; with
"int8"/"int4" it walks a shadow module tree that shares every tensor with the model except the
quantised linear weights it adds (lowbit.py), in Llama-family layers fused and run in fewer tensor
operations (fused_sublayers.py). Positions are always passed explicitly, and masks are
built from them, because the cache of a skipped layer is shorter than the others while drafting.
"""

from __future__ import annotations

import copy
import inspect

import torch
from torch import nn

from selfspec.engine.architectures import (
    attention_sublayer,
    attention_window,
    check_supported,
    decoder,
    decoder_layers,
    layer_type,
    mlp_sublayer,
    num_layers,
)
from selfspec.engine.cache import is_static, layer_length
from selfspec.engine.fused_sublayers import fused_attention_sublayer, fused_mlp_sublayer
from selfspec.engine.lowbit import DRAFT_WEIGHTS, low_bit_shadow
from selfspec.profiles.schema import SkipProfile


class DraftModel:
    def __init__(self, model: nn.Module, profile: SkipProfile, head: "DraftHead | None" = None,
                 weights: str = "full", kernels: dict[str, str] | None = None):
        check_supported(model)
        profile.check_fits(num_layers(model))
        if weights not in DRAFT_WEIGHTS:
            raise ValueError(f"draft weights must be one of {', '.join(DRAFT_WEIGHTS)}; got {weights!r}")
        self.model = model
        self.profile = profile
        self.weights = weights
        body, self.lowbit = (model, None) if weights == "full" else low_bit_shadow(model, weights, kernels)
        fused = self.lowbit is not None and self.lowbit.fused
        self._attention = fused_attention_sublayer if fused else attention_sublayer
        self._mlp = fused_mlp_sublayer if fused else mlp_sublayer
        self.head = head or FullHead(body)
        self._decoder = decoder(body)
        self._layers = list(decoder_layers(body))
        self._config = model.config
        self._attn_impl = getattr(model.config, "_attn_implementation", "sdpa") or "sdpa"
        self._plan = self._plan_for(profile)
        rotary = self._decoder.rotary_emb
        self._rotary_by_type = "layer_type" in inspect.signature(rotary.forward).parameters
        self._layer_types = [layer_type(self._config, i) for i in range(len(self._layers))]
        self._windows = [attention_window(self._config, i) for i in range(len(self._layers))]
        self._softcap = getattr(self._config, "final_logit_softcapping", None)
        # What the last self-speculative run with this draft measured (engine/controller.py `Carried`):
        # the next run's controller starts from it instead of from nothing.
        self.carried = None

    def _plan_for(self, profile: SkipProfile) -> list:
        """Planned once (not per step): which sublayers run in each layer."""
        skip_attn, skip_mlp = set(profile.attn), set(profile.mlp)
        return [(i, layer, i not in skip_attn, i not in skip_mlp) for i, layer in enumerate(self._layers)]

    def with_profile(self, profile: SkipProfile) -> "DraftModel":
        """The same draft (its low-bit weights shared, not rebuilt) skipping another profile's sublayers."""
        profile.check_fits(len(self._layers))
        twin = copy.copy(self)
        twin.profile, twin._plan = profile, self._plan_for(profile)
        twin.carried = None  # another skip set: other costs and acceptance
        return twin

    @property
    def extra_bytes(self) -> int:
        """Memory the draft holds beside the model (0 for the full-weight draft)."""
        return 0 if self.lowbit is None else self.lowbit.extra_bytes

    @property
    def vocabulary(self) -> torch.Tensor | None:
        """Token ids the draft scores (None: the whole vocabulary)."""
        return self.head.vocabulary

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, cache) -> torch.Tensor:
        """Draft logits for `input_ids` (batch 1) at absolute `position_ids`, appending to `cache`."""
        hidden = self._decoder.embed_tokens(input_ids)
        rotary = self._decoder.rotary_emb
        if self._rotary_by_type:
            position_embeddings = {t: rotary(hidden, position_ids, t) for t in set(self._layer_types)}
        else:
            shared = rotary(hidden, position_ids)
            position_embeddings = {t: shared for t in set(self._layer_types)}
        masks = {}  # one per distinct (key length, window) within this forward
        for i, layer, run_attn, run_mlp in self._plan:
            if run_attn:
                mask = self._mask(i, position_ids, cache, hidden.dtype, masks)
                hidden = self._attention(
                    layer, hidden, position_embeddings[self._layer_types[i]], mask, position_ids, cache
                )
            if run_mlp:
                hidden = self._mlp(layer, hidden)
        hidden = self._decoder.norm(hidden)
        logits = self.head(hidden)
        if self._softcap is not None:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        return logits

    __call__ = forward

    def _mask(self, layer_index: int, position_ids: torch.Tensor, cache, dtype: torch.dtype, masks: dict):
        """Attention mask for one layer, over *that layer's* keys, from positions; None when none is needed.

        A dynamic cache returns the layer's own keys (shorter for layers the draft skipped); a static
        cache returns its whole buffer, whose entries past the query's position are stale or empty.
        """
        query_len = position_ids.shape[-1]
        static = is_static(cache)
        kv_len = cache.capacity if static else layer_length(cache, layer_index) + query_len
        window = self._windows[layer_index]
        needs_window = window is not None and (static or kv_len > window)
        if query_len == 1 and not needs_window and not static:
            return None  # one query attends to the whole (causal) cache: no mask
        if self._attn_impl not in ("sdpa", "eager"):
            return None  # flash-style kernels apply causality and windows themselves
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


class FullHead:
    """The model's own output head over the whole vocabulary."""

    vocabulary = None

    def __init__(self, model: nn.Module):
        self.lm_head = model.get_output_embeddings()

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)


class VocabularyHead:
    """The output head scoring only a subset of the vocabulary (a cheaper draft head).

    The full model verifies over the whole vocabulary, so output stays lossless: greedy drafts outside
    the subset are simply never proposed, and in sampling mode the draft distribution lives on the
    subset, which the min(1, p/q) rule allows. The subset's rows are copied once into one contiguous
    matrix (|subset| x hidden, a few MB), because gathering them per step would cost what it saves.
    """

    def __init__(self, model: nn.Module, token_ids):
        lm_head = model.get_output_embeddings()
        weight = lm_head.weight
        ids = sorted(set(int(t) for t in token_ids))
        if not ids:
            raise ValueError("the draft vocabulary is empty")
        if ids[0] < 0 or ids[-1] >= weight.shape[0]:
            raise ValueError(f"draft vocabulary ids must be in 0..{weight.shape[0] - 1}")
        self.vocabulary = torch.tensor(ids, dtype=torch.long, device=weight.device)
        with torch.no_grad():
            self.weight = weight[self.vocabulary].contiguous()
            bias = getattr(lm_head, "bias", None)
            self.bias = None if bias is None else bias[self.vocabulary].contiguous()

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(hidden, self.weight, self.bias)


DraftHead = FullHead | VocabularyHead
