"""The CPU verification forward: weight-major products for a few rows, scoped to a `with` block."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from selfspec.engine.cache import new_cache
from selfspec.engine.decoding import forward_full, forward_verify
from selfspec.engine.narrow_linear import NarrowLinear

from tiny_models import tiny_model


@pytest.mark.parametrize("rows", [1, 2, 5, 8, 9, 20])
def test_linear_matches_torch_and_only_few_rows_take_the_other_path(rows):
    torch.manual_seed(rows)
    weight, bias = torch.randn(48, 32), torch.randn(48)
    x = torch.randn(1, rows, 32)  # batch, positions, features, as the model passes them
    expected = F.linear(x, weight, bias)
    with NarrowLinear(max_rows=8):
        got = F.linear(x, weight, bias)
        no_bias = F.linear(x, weight)
    assert got.shape == expected.shape and got.is_contiguous()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(no_bias, F.linear(x, weight), rtol=1e-5, atol=1e-5)
    if rows == 1 or rows > 8:  # passed through untouched: bit-identical
        assert torch.equal(got, expected)


def test_mode_ends_with_its_block_and_leaves_modules_alone():
    model = tiny_model("qwen2", seed=3)  # Qwen2's attention projections carry biases
    before = {name: type(m).forward for name, m in model.named_modules()}
    with NarrowLinear():
        pass
    assert not torch.overrides._get_current_function_mode_stack()
    assert {name: type(m).forward for name, m in model.named_modules()} == before


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma2"])
def test_verification_forward_gives_the_full_models_logits(arch):
    model = tiny_model(arch, seed=4)
    prompt = torch.tensor([[5, 9, 17, 33, 2, 8, 41, 60, 7, 3]])
    for width in (2, 5, 8):
        cache_a, cache_b = new_cache(), new_cache()
        forward_full(model, prompt, 0, cache_a)
        forward_full(model, prompt, 0, cache_b)
        block = torch.tensor([[11, 12, 13, 14, 15, 16, 17, 18][:width]])
        plain = forward_full(model, block, prompt.shape[1], cache_a)
        narrow = forward_verify(model, block, prompt.shape[1], cache_b)
        torch.testing.assert_close(narrow, plain, rtol=1e-4, atol=1e-4)
        assert torch.equal(narrow.argmax(-1), plain.argmax(-1))
