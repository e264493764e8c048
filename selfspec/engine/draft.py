"""The draft: the same model with chosen attention/MLP sublayers bypassed, optionally reading
low-bit copies of its linear weights.

`DraftModel` is a read-only view. It walks the model's own modules in its own small forward pass
(walk.py), so it registers no hooks and flips no switches: the model is exactly as it was after every
call, whatever happens during one. With `weights="full"` (the paper's draft) it copies nothing; with
"int8"/"int4" it walks a shadow module tree that shares every tensor with the model except the
quantised linear weights it adds (lowbit.py), in Llama-family layers fused and run in fewer tensor
operations (fused_sublayers.py). Positions are always passed explicitly, and masks are
built from them, because the cache of a skipped layer is shorter than the others while drafting.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from selfspec.engine.architectures import check_supported, num_layers
from selfspec.engine.lowbit import DRAFT_WEIGHTS, low_bit_shadow
from selfspec.engine.walk import LayerWalk
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
        self.head = head or FullHead(body)
        self.walk = LayerWalk(body, model.config, self.head, fused).skipping(profile.attn, profile.mlp)
        # What the last self-speculative run with this draft measured (engine/controller.py `Carried`):
        # the next run's controller starts from it instead of from nothing.
        self.carried = None

    def with_profile(self, profile: SkipProfile) -> "DraftModel":
        """The same draft (its low-bit weights shared, not rebuilt) skipping another profile's sublayers."""
        profile.check_fits(num_layers(self.model))
        twin = copy.copy(self)
        twin.profile, twin.walk = profile, self.walk.skipping(profile.attn, profile.mlp)
        twin.carried = None  # another skip set: other costs and acceptance
        return twin

    @property
    def extra_bytes(self) -> int:
        """Memory the draft holds beside the model (0 for the full-weight draft)."""
        return 0 if self.lowbit is None else self.lowbit.extra_bytes

    def describe(self) -> dict:
        """What the draft is and costs, for --json reports and bench output: its weights, the memory they add,
        the kernels chosen, and which loop runs its layers (native_layers.py)."""
        return {"draft_weights": self.weights, "draft_extra_bytes": self.extra_bytes,
                "kernels": self.lowbit.kernels if self.lowbit is not None else {},
                "layer_loop": self.walk.layer_loop}

    @property
    def vocabulary(self) -> torch.Tensor | None:
        """Token ids the draft scores (None: the whole vocabulary)."""
        return self.head.vocabulary

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, cache) -> torch.Tensor:
        """Draft logits for `input_ids` (batch 1) at absolute `position_ids`, appending to `cache`."""
        return self.walk(input_ids, position_ids, cache)

    __call__ = forward


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
