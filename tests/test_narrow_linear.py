"""Verification products: the weight-major candidate, the per-machine choice, and the engine's use of it."""

from __future__ import annotations

import time

import pytest
import torch
from torch.nn import functional as F

from selfspec.engine import narrow_linear, verify_products
from selfspec.engine.narrow_linear import WeightMajorLinear
from selfspec.engine.runtime import Engine, forward_full
from selfspec.engine.verify_products import ROW_BUCKETS, VerifyProducts, choose_verify_products, linear_weights

from tiny_models import tiny_model


@pytest.mark.parametrize("rows", [1, 2, 5, 8, 9, 20])
def test_weight_major_layer_matches_torch_and_only_the_chosen_rows_take_the_other_path(rows):
    torch.manual_seed(rows)
    linear = torch.nn.Linear(32, 48)
    x = torch.randn(1, rows, 32)  # batch, positions, features, as the model passes them
    expected = F.linear(x, linear.weight, linear.bias)
    layer = WeightMajorLinear(linear, rows=range(2, 9))
    got = layer(x)
    assert got.shape == expected.shape and got.is_contiguous()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert layer.weight is linear.weight and layer.bias is linear.bias  # shared, not copied
    if rows == 1 or rows > 8:  # passed through untouched: bit-identical
        assert torch.equal(got, expected)
    no_bias = WeightMajorLinear(torch.nn.Linear(32, 48, bias=False), rows=[rows])
    torch.testing.assert_close(no_bias(x), F.linear(x, no_bias.weight), rtol=1e-5, atol=1e-5)


def test_the_verifier_swaps_only_the_chosen_shapes_and_leaves_the_model_alone():
    model = tiny_model("qwen2", seed=3)  # Qwen2's attention projections carry biases
    before = {name: type(m) for name, m in model.named_modules()}
    params = {name: p for name, p in model.named_parameters()}
    shapes = {tuple(m.weight.shape) for m in model.modules() if isinstance(m, torch.nn.Linear)}
    head = tuple(model.get_output_embeddings().weight.shape)
    products = VerifyProducts({(2, 3): frozenset({head}), (4, 5): frozenset(), (6, 9): frozenset({head})})
    verifier = products.verifier(model)
    swapped = {tuple(m.weight.shape): m.rows for m in verifier.modules() if isinstance(m, WeightMajorLinear)}
    assert swapped == {head: frozenset({2, 3, 6, 7, 8, 9})} and len(shapes) > 1
    assert {name: type(m) for name, m in model.named_modules()} == before
    assert all(p is params[name] for name, p in verifier.named_parameters())  # every tensor shared
    assert VerifyProducts.plain().verifier(model) is model


def test_the_choice_follows_the_timings_per_shape_and_bucket(monkeypatch, tmp_path):
    monkeypatch.setenv("SELFSPEC_CACHE", str(tmp_path))
    model = tiny_model("llama", seed=1)
    shapes = set(linear_weights(model))
    assert (96, 32) in shapes and (64, 32) in shapes  # lm_head and the MLP's up projection
    # Make the weight-major product slow for every shape but the lm_head's: that is what must be chosen.
    seen = set()

    def slowed_unless(lm_head: bool, product):
        def run(x, weight, bias=None):
            seen.add(id(weight))
            if (tuple(weight.shape) == (96, 32)) == lm_head:
                time.sleep(0.002)
            return product(x, weight, bias)
        return run

    monkeypatch.setitem(verify_products.PRODUCTS, "linear", slowed_unless(True, F.linear))
    monkeypatch.setitem(verify_products.PRODUCTS, "weight-major",
                        slowed_unless(False, narrow_linear.weight_major_linear))
    products = choose_verify_products(model)
    assert products.weight_major == {bucket: frozenset({(96, 32)}) for bucket in ROW_BUCKETS}
    assert len(products.choices) == len(shapes) * len(ROW_BUCKETS)
    assert "weight-major for 96x32" in products.summary()
    assert products.to_dict()["weight_major"]["rows 2-3"] == ["96x32"]
    # Timed as a forward meets them: every weight of each shape in turn, not one hot weight.
    assert seen == {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Linear)}


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma2"])
def test_verification_forward_gives_the_full_models_logits(arch, monkeypatch, tmp_path):
    monkeypatch.setenv("SELFSPEC_CACHE", str(tmp_path))
    model = tiny_model(arch, seed=4)
    everything = VerifyProducts({b: frozenset(linear_weights(model)) for b in ROW_BUCKETS})
    engine = Engine(model, choose_kernels=False)
    engine.use_products(everything)  # every product weight-major, whatever this machine prefers
    prompt = torch.tensor([[5, 9, 17, 33, 2, 8, 41, 60, 7, 3]])
    for width in (2, 5, 8):
        cache_a, cache_b = engine.new_cache(10, 0, 8), engine.new_cache(10, 0, 8)
        forward_full(model, prompt, 0, cache_a)
        forward_full(model, prompt, 0, cache_b)
        block = torch.tensor([[11, 12, 13, 14, 15, 16, 17, 18][:width]])
        plain = forward_full(model, block, prompt.shape[1], cache_a)
        narrow = engine.verify(block, prompt.shape[1], cache_b)
        torch.testing.assert_close(narrow, plain, rtol=1e-4, atol=1e-4)
        assert torch.equal(narrow.argmax(-1), plain.argmax(-1))
