"""The draft model and the shared cache, tested directly against hand-built expectations."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import DynamicCache

from selfspec.engine.cache import layer_length, new_cache, truncate
from selfspec.engine.draft import DraftModel
from selfspec.profiles.schema import SkipProfile
from tiny_models import CONFIGS, tiny_model

TOKENS = torch.tensor([[3, 17, 42, 5, 60, 11, 9]])
POSITIONS = torch.arange(TOKENS.shape[1])[None]


def full_logits(model) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=TOKENS, position_ids=POSITIONS, use_cache=False).logits


def draft_logits(model, profile: SkipProfile) -> torch.Tensor:
    with torch.inference_mode():
        return DraftModel(model, profile)(TOKENS, POSITIONS, new_cache())


def bypassed(model, attn: list[int], mlp: list[int]):
    """A copy of the model whose chosen sublayers add nothing to the residual stream: their output
    projections are zero, so each one's contribution (through a post-norm too) is exactly zero."""
    copy_ = copy.deepcopy(model)
    layers = copy_.model.layers
    with torch.no_grad():
        for i in attn:
            for p in layers[i].self_attn.o_proj.parameters():
                p.zero_()
        for i in mlp:
            for p in layers[i].mlp.down_proj.parameters():
                p.zero_()
    return copy_


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_skipping_nothing_gives_the_models_own_logits(arch):
    model = tiny_model(arch, seed=3)
    layers = model.config.num_hidden_layers
    assert torch.allclose(draft_logits(model, SkipProfile.none(layers)), full_logits(model), atol=1e-5)


@pytest.mark.parametrize("arch", sorted(CONFIGS))
@pytest.mark.parametrize("attn, mlp", [([1], []), ([], [2]), ([0, 3], [1])])
def test_skipping_sublayers_equals_a_hand_built_bypass(arch, attn, mlp):
    model = tiny_model(arch, seed=3)
    expected = full_logits(bypassed(model, attn, mlp))
    got = draft_logits(model, SkipProfile(model.config.num_hidden_layers, attn, mlp))
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, full_logits(model), atol=1e-3)  # the skip did change something


def test_the_draft_leaves_the_model_as_it_was():
    model = tiny_model("llama", seed=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    draft_logits(model, SkipProfile(4, attn=[1, 2], mlp=[0]))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.allclose(full_logits(model), full_logits(copy.deepcopy(model)))


def test_rollback_trims_layers_of_different_lengths_each_to_the_target():
    cache = DynamicCache()
    lengths = [5, 3, 7, 0]
    originals = []
    for layer, n in enumerate(lengths):
        keys = torch.arange(2 * n * 4, dtype=torch.float32).view(1, 2, n, 4) + 1000 * layer
        cache.update(keys, -keys, layer)
        originals.append(keys)
    truncate(cache, 4)
    assert [layer_length(cache, i) for i in range(4)] == [4, 3, 4, 0]  # shorter layers are left alone
    for layer, keys in enumerate(originals):
        kept = min(lengths[layer], 4)
        if kept:
            assert torch.equal(cache.layers[layer].keys, keys[..., :kept, :])
            assert torch.equal(cache.layers[layer].values, -keys[..., :kept, :])


def test_a_draft_step_then_rollback_restores_the_committed_cache():
    model = tiny_model("qwen2", seed=1)
    cache = new_cache()
    with torch.inference_mode():
        model(input_ids=TOKENS, position_ids=POSITIONS, cache=cache, use_cache=True)
        committed = [layer.keys.clone() for layer in cache.layers]
        n = TOKENS.shape[1]
        draft = DraftModel(model, SkipProfile(4, attn=[1, 3]))
        for i in range(3):  # three draft tokens: layers 1 and 3 write nothing
            draft(torch.tensor([[7 + i]]), torch.tensor([[n + i]]), cache)
    assert [layer_length(cache, i) for i in range(4)] == [n + 3, n, n + 3, n]
    truncate(cache, n)
    assert all(torch.equal(layer.keys, keys) for layer, keys in zip(cache.layers, committed))
