"""The bfloat16 pair-dot product (csrc/bf16_pair_products.cpp, narrow_linear.bf16_pairs_linear): its layout, its
sums against float64, every row summed alike whatever rows share the call, and where row_products.py offers it."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from selfspec.engine.narrow_linear import bf16_pairs_available, bf16_pairs_linear, bf16_pairs_packed
from selfspec.engine import row_products
from selfspec.engine.row_products import (PREFILL_BUCKET, ROW_BUCKETS, RowProducts, candidate_products,
                                          prefill_candidates)
from tiny_models import tiny_model

CPU = torch.device("cpu")
needs_pairs = pytest.mark.skipif(not bf16_pairs_available(CPU, torch.bfloat16),
                                 reason="no AVX512-BF16 on this CPU, or no C++ extension")


def bf16(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(torch.bfloat16)


def test_the_layout_puts_a_pair_of_inputs_of_16_outputs_side_by_side():
    weight = bf16(48, 10, seed=0)
    packed = bf16_pairs_packed(weight)
    assert packed.shape == (3, 5, 32)
    for block in range(3):
        for pair in range(5):
            for output in range(16):
                for j in range(2):
                    assert packed[block, pair, 2 * output + j] == weight[16 * block + output, 2 * pair + j]


@needs_pairs
@pytest.mark.parametrize("out_features, in_features", [(16, 2), (48, 64), (208, 96), (64, 1536)])
@pytest.mark.parametrize("leading", [(1,), (5,), (17,), (2, 3), (40,)])
def test_the_product_is_the_linear_layer_to_bfloat16_rounding(out_features, in_features, leading):
    x, weight = bf16(*leading, in_features, seed=1), bf16(out_features, in_features, seed=2)
    bias = bf16(out_features, seed=3)
    exact = x.double() @ weight.double().T
    sums_error = (x.double().abs() @ weight.double().abs().T) * in_features * 2.0 ** -23  # float32 sums
    for with_bias in (False, True):
        expected = exact + (bias.double() if with_bias else 0)
        tolerance = expected.abs() * 2.0 ** -8 + sums_error  # rounded once to bfloat16: half a unit of the result
        got = bf16_pairs_linear(x, bf16_pairs_packed(weight), bias if with_bias else None)
        assert got.shape == (*leading, out_features) and got.dtype == torch.bfloat16
        assert ((got.double() - expected).abs() <= tolerance + 1e-30).all()


@needs_pairs
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_each_row_gets_what_it_gets_alone_whatever_rows_share_the_call(threads):
    x, weight, bias = bf16(60, 576, seed=4), bf16(208, 576, seed=5), bf16(208, seed=6)
    packed = bf16_pairs_packed(weight)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        alone = torch.cat([bf16_pairs_linear(x[j:j + 1], packed, bias) for j in range(len(x))])
        for rows in range(2, 18):
            for start in range(0, len(x) - rows + 1, rows):
                assert torch.equal(bf16_pairs_linear(x[start:start + rows], packed, bias), alone[start:start + rows])
    finally:
        torch.set_num_threads(previous)


def test_offered_only_in_bfloat16_with_the_instructions_copies_allowed_and_every_shape_in_blocks():
    fits, odd = [(32, 64), (96, 32)], [(32, 64), (24, 32)]
    assert "bf16-pairs" not in candidate_products(CPU, torch.float32, packing=True, shapes=fits)
    assert "bf16-pairs" not in candidate_products(CPU, torch.bfloat16, packing=False, shapes=fits)
    assert "bf16-pairs" not in candidate_products(CPU, torch.bfloat16, packing=True, shapes=odd)
    offered = "bf16-pairs" in candidate_products(CPU, torch.bfloat16, packing=True, shapes=fits)
    assert offered == bf16_pairs_available(CPU, torch.bfloat16)


@needs_pairs
def test_the_packed_copy_refuses_activations_of_another_dtype_or_width():
    packed = bf16_pairs_packed(bf16(32, 64, seed=7))
    with pytest.raises(RuntimeError, match="bfloat16 activations"):
        bf16_pairs_linear(torch.randn(2, 64), packed)
    with pytest.raises(RuntimeError, match="the weights take 64"):
        bf16_pairs_linear(bf16(2, 62, seed=8), packed)


def test_a_weight_read_by_two_prepared_products_counts_both_copies():
    model = tiny_model("llama")
    down = tuple(model.model.layers[0].mlp.down_proj.weight.shape)
    both = RowProducts({ROW_BUCKETS[0]: {down: "bf16-pairs"}, PREFILL_BUCKET: {down: "onednn-packed"}})
    one = RowProducts({ROW_BUCKETS[0]: {down: "bf16-pairs"}, PREFILL_BUCKET: {down: "bf16-pairs"}})
    down_bytes = sum(layer.mlp.down_proj.weight.numel() * 4 for layer in model.model.layers)  # float32
    assert one.extra_bytes(model) == down_bytes and both.extra_bytes(model) == 2 * down_bytes


def test_prompts_leave_onednns_copy_out_where_a_second_copy_would_not_fit(monkeypatch):
    model = tiny_model("llama")
    weight_bytes = sum(w.numel() * 4 for group in row_products.linear_weights(model).values() for w in group)
    offered = dict.fromkeys(("linear", "weight-major", "onednn-packed", "bf16-pairs"), F.linear)
    monkeypatch.setattr(row_products, "available_memory", lambda: 4 * weight_bytes)  # two copies: half of it
    assert set(prefill_candidates(offered, model)) == {"linear", "onednn-packed", "bf16-pairs"}
    monkeypatch.setattr(row_products, "available_memory", lambda: 4 * weight_bytes - 1)
    assert set(prefill_candidates(offered, model)) == {"linear", "bf16-pairs"}
    del offered["bf16-pairs"]  # oneDNN's copy alone is the one copy packing_fits allowed
    assert set(prefill_candidates(offered, model)) == {"linear", "onednn-packed"}
