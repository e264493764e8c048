"""Few-row products: the candidates (weight-major, oneDNN, thread-split), the per-machine choice, and the engine's use of it."""

from __future__ import annotations

import time

import pytest
import torch
from torch.nn import functional as F

from selfspec.engine import narrow_linear, row_products
from selfspec.bench.floor import linear_layers as linear_layers_of_step
from selfspec.engine.narrow_linear import (JoinedLinear, RowChosenLinear, onednn_available, onednn_linear, onednn_packed,
                                           onednn_packing_available, thread_split_linear, weight_major_linear,
                                           _thread_split_rows)
from selfspec.engine.architectures import PROJECTION_GROUPS, decoder_layers, stacked_linear
from selfspec.engine.runtime import Engine, forward_full
from selfspec.engine.row_products import (PREFILL_BUCKET, ROW_BUCKETS, RowProducts, candidate_products, choose_row_products,
                                          linear_weights, packing_fits, streamed)

from tiny_models import tiny_model


@pytest.mark.parametrize("rows", [1, 2, 5, 8, 9, 20])
def test_stand_in_layer_matches_torch_and_only_the_chosen_rows_take_the_other_products(rows):
    torch.manual_seed(rows)
    linear = torch.nn.Linear(32, 48)
    x = torch.randn(1, rows, 32)  # batch, positions, features, as the model passes them
    expected = x @ linear.weight.T + linear.bias  # the definition, not torch's linear
    calls = []

    def spy(product):
        def run(x, weight, bias=None):
            calls.append(product.__name__)
            return product(x, weight, bias)
        run.__name__ = product.__name__
        return run

    chosen = {r: spy(weight_major_linear) for r in range(2, 9)} | {5: spy(onednn_linear), 8: spy(onednn_linear)}
    if not onednn_available(x.device):
        chosen = {r: spy(weight_major_linear) for r in range(2, 9)}
    prefill = spy(onednn_linear if onednn_available(x.device) else weight_major_linear)
    layer = RowChosenLinear(linear, chosen, prefill=(18, prefill, linear.weight))
    got = layer(x)
    assert got.shape == expected.shape and got.is_contiguous()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert layer.weight is linear.weight and layer.bias is linear.bias  # shared, not copied
    assert calls == ([chosen[rows].__name__] if rows in chosen else [prefill.__name__] if rows >= 18 else [])
    assert RowChosenLinear(linear, chosen).prefill_product is None and layer.prefill_product is prefill
    if rows == 1 or 8 < rows < 18:  # passed through to torch's linear: bit-identical
        assert torch.equal(got, F.linear(x, linear.weight, linear.bias))
    no_bias = RowChosenLinear(torch.nn.Linear(32, 48, bias=False), {rows: onednn_linear if onednn_available(
        x.device) else weight_major_linear})
    torch.testing.assert_close(no_bias(x), x @ no_bias.weight.T, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("out_features", [1, 5, 48, 49])
def test_thread_split_product_is_a_linear_layer_whatever_the_slabs_leave_over(threads, out_features):
    # Out features not divisible by the slab count (one slab per thread, at least two) go to one more product.
    torch.manual_seed(out_features)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        inputs = [torch.randn(*shape, dtype=torch.float64) for shape in [(3, 16), (2, 7, 16), (1, 1, 16)]]
        # One row that starts inside its storage, and one whose elements are not adjacent.
        inputs += [torch.randn(3, 16, dtype=torch.float64)[2:].view(1, 1, 16),
                   torch.randn(1, 1, 32, dtype=torch.float64)[..., ::2]]
        for x in inputs:
            shape = x.shape
            weight, bias = torch.randn(out_features, 16, dtype=torch.float64), torch.randn(out_features, dtype=torch.float64)
            got = thread_split_linear(x, weight, bias)
            assert got.shape == (*shape[:-1], out_features) and got.is_contiguous()
            torch.testing.assert_close(got, x @ weight.T + bias)
            torch.testing.assert_close(thread_split_linear(x, weight), x @ weight.T)
            if shape[:-1] == (1, 1):  # one row takes a shorter path to the same batched product: the same bits
                columns = x.reshape(1, 16).t().contiguous()
                assert torch.equal(thread_split_linear(x, weight).reshape(-1), _thread_split_rows(columns, weight).reshape(-1))
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not onednn_available(torch.device("cpu")), reason="this torch build has no oneDNN")
@pytest.mark.parametrize("shape", [(3, 16), (2, 7, 16), (1, 1, 16), (1, 17, 16)])
def test_onednn_product_is_a_linear_layer_on_the_weight_and_on_its_packed_copy(shape):
    torch.manual_seed(len(shape))
    x, weight, bias = torch.randn(*shape), torch.randn(24, 16), torch.randn(24)
    torch.testing.assert_close(onednn_linear(x, weight, bias), x @ weight.T + bias, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(onednn_linear(x, weight), x @ weight.T, rtol=1e-5, atol=1e-5)
    if onednn_packing_available(x.device, x.dtype):  # packed for 9 rows, right for any number
        packed = onednn_packed(weight)
        torch.testing.assert_close(onednn_linear(x, packed, bias), x @ weight.T + bias, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(onednn_linear(x, packed), x @ weight.T, rtol=1e-5, atol=1e-5)


def test_the_stand_in_layer_hands_each_product_the_weight_made_for_it():
    torch.manual_seed(0)
    linear = torch.nn.Linear(16, 8)
    copy = linear.weight.detach() * 2  # a stand-in for a prepared copy: what the product must read
    read = []

    def product(x, weight, bias=None):
        read.append(weight)
        return F.linear(x, weight, bias)

    layer = RowChosenLinear(linear, {2: product, 3: product}, {3: copy})
    x2, x3 = torch.randn(1, 2, 16), torch.randn(1, 3, 16)
    torch.testing.assert_close(layer(x2), x2 @ linear.weight.T + linear.bias)
    torch.testing.assert_close(layer(x3), x3 @ copy.T + linear.bias)
    assert read[0] is linear.weight and read[1] is copy


def test_packed_weights_are_offered_only_where_they_fit_and_replace_oneDNNs_plain_product(monkeypatch):
    cpu = torch.device("cpu")
    model = tiny_model("llama", seed=1)
    weight_bytes = sum(w.numel() * 4 for group in linear_weights(model).values() for w in group)
    monkeypatch.setattr(row_products, "available_memory", lambda: 2 * weight_bytes)
    assert packing_fits(model)
    monkeypatch.setattr(row_products, "available_memory", lambda: 2 * weight_bytes - 1)
    assert not packing_fits(model)  # the copies may take at most half of the free memory
    unpacked = set(candidate_products(cpu, torch.float32, packing=False))
    assert "onednn-packed" not in unpacked and ("onednn" in unpacked) == onednn_available(cpu)
    packed = set(candidate_products(cpu, torch.float32, packing=True))
    if onednn_packing_available(cpu, torch.float32):
        assert packed == unpacked - {"onednn"} | {"onednn-packed"}
    else:
        assert packed == unpacked


def test_the_tuned_model_swaps_only_the_chosen_shapes_and_leaves_the_model_alone():
    model = tiny_model("qwen2", seed=3)  # Qwen2's attention projections carry biases
    before = {name: type(m) for name, m in model.named_modules()}
    params = {name: p for name, p in model.named_parameters()}
    shapes = {tuple(m.weight.shape) for m in model.modules() if isinstance(m, torch.nn.Linear)}
    head = tuple(model.get_output_embeddings().weight.shape)
    products = RowProducts({(2, 3): {head: "weight-major"}, (4, 5): {}, (6, 9): {head: "onednn"}})
    tuned = products.tuned(model)
    swapped = {tuple(m.weight.shape): {r: p.__name__ for r, p in m.products.items()}
               for m in tuned.modules() if isinstance(m, RowChosenLinear)}
    assert swapped == {head: {2: "weight_major_linear", 3: "weight_major_linear", **{
        r: "onednn_linear" for r in (6, 7, 8, 9)}}} and len(shapes) > 1
    assert {name: type(m) for name, m in model.named_modules()} == before
    assert all(p is params[name] for name, p in tuned.named_parameters())  # every tensor shared
    assert RowProducts.plain().tuned(model) is model
    assert products.extra_bytes(model) == 0  # these products read the model's own weights


@pytest.mark.skipif(not onednn_packing_available(torch.device("cpu"), torch.float32),
                    reason="this build cannot pack weights for oneDNN")
def test_packed_products_give_the_models_logits_and_count_their_memory():
    model = tiny_model("qwen2", seed=5)
    shapes = linear_weights(model)
    head = tuple(model.get_output_embeddings().weight.shape)
    products = RowProducts({(1, 1): {head: "onednn-packed"}, (4, 5): {s: "onednn-packed" for s in shapes},
                            PREFILL_BUCKET: {s: "onednn-packed" for s in shapes}})
    engine = Engine(model, choose_kernels=False)
    engine.use_products(products)
    assert {m.prefill_product for m in engine.tuned.modules() if isinstance(m, RowChosenLinear)} == {onednn_linear}
    long_prompt = torch.arange(3, 3 + 2 * PREFILL_BUCKET[0])[None]  # a prefill: every product the packed one
    torch.testing.assert_close(engine.full(long_prompt, 0, engine.new_cache(long_prompt.shape[1], 0)),
                               forward_full(model, long_prompt, 0, engine.new_cache(long_prompt.shape[1], 0)),
                               rtol=1e-4, atol=1e-4)
    prompt = torch.tensor([[5, 9, 17, 33, 2, 8, 41, 60, 7, 3]])
    for width in (1, 5):
        cache_a, cache_b = engine.new_cache(10, 0, 5), engine.new_cache(10, 0, 5)
        forward_full(model, prompt, 0, cache_a)
        forward_full(model, prompt, 0, cache_b)
        block = torch.tensor([[11, 12, 13, 14, 15][:width]])
        torch.testing.assert_close(engine.verify(block, 10, cache_b), forward_full(model, block, 10, cache_a),
                                   rtol=1e-4, atol=1e-4)
    # One packed copy per linear weight of a packed shape, whatever the rows it serves: every shape here, each weight once.
    expected = sum(w.numel() * w.element_size() for group in shapes.values() for w in group)
    assert products.extra_bytes(model) == expected == engine.describe()["products"]["extra_bytes"]


@pytest.mark.parametrize("arch, product", [
    ("llama", "onednn-packed"), ("qwen2", "onednn-packed"),  # Qwen2's q/k/v carry biases
    ("qwen2", "linear"),  # a GPU's join: torch's own product over the stacked weights
])
def test_joined_projections_give_the_models_logits_and_hold_one_copy_of_their_parts(arch, product):
    if product == "onednn-packed" and not onednn_packing_available(torch.device("cpu"), torch.float32):
        pytest.skip("this build cannot pack weights for oneDNN")
    model = tiny_model(arch, seed=6)
    params = {name: p for name, p in model.named_parameters()}
    groups = tuple(group for _, group, _ in PROJECTION_GROUPS)
    products = RowProducts({}, joined={bucket: groups for bucket in ROW_BUCKETS + (PREFILL_BUCKET,)},
                           joined_product=product)
    engine = Engine(model, choose_kernels=False)
    engine.use_products(products)
    for layer in decoder_layers(engine.tuned):  # the shadow's layers run each group as one product...
        assert isinstance(layer.self_attn.qkv_proj, JoinedLinear) and isinstance(layer.mlp.gate_up_proj, JoinedLinear)
        assert not any(hasattr(layer.self_attn, n) for n in ("q_proj", "k_proj", "v_proj"))
        assert not any(hasattr(layer.mlp, n) for n in ("gate_proj", "up_proj"))
    for layer in decoder_layers(model):  # ...the model's are as they were
        assert hasattr(layer.self_attn, "q_proj") and not hasattr(layer.self_attn, "qkv_proj")
    assert {name: p for name, p in model.named_parameters()} == params
    prompt = torch.tensor([[5, 9, 17, 33, 2, 8, 41, 60, 7, 3]])
    for width in (1, 5, 9):  # a decoding step and verifications, after a prefill through the joined products too
        cache_a, cache_b = engine.new_cache(10, 0, 9), engine.new_cache(10, 0, 9)
        forward_full(model, prompt, 0, cache_a)
        engine.full(prompt, 0, cache_b)
        block = torch.arange(11, 11 + width)[None]
        plain = forward_full(model, block, 10, cache_a)
        joined = engine.full(block, 10, cache_b) if width == 1 else engine.verify(block, 10, cache_b)
        torch.testing.assert_close(joined, plain, rtol=1e-5, atol=1e-5)
        assert torch.equal(joined.argmax(-1), plain.argmax(-1))
    # One packed copy of every part's weight, each once; the floor times the products the step runs.
    parts = [getattr(getattr(layer, owner), n).weight for layer in decoder_layers(model)
             for owner, _, names in PROJECTION_GROUPS for n in names]
    assert products.extra_bytes(model) == sum(w.numel() * w.element_size() for w in parts)
    layers = len(decoder_layers(model))
    assert len(linear_layers_of_step(engine.tuned)) == 4 * layers + 1  # q/k/v, o, gate/up, down; the head
    assert engine.describe()["products"]["joined"]["rows 18+"] == list(groups)
    assert (f"joined into one {product} product: qkv_proj over every row count, gate_up_proj over every row count"
            in products.summary())


@pytest.mark.skipif(not onednn_packing_available(torch.device("cpu"), torch.float32),
                    reason="this build cannot pack weights for oneDNN")
def test_a_group_joined_over_some_rows_runs_its_parts_with_their_own_products_over_the_others(monkeypatch):
    model = tiny_model("qwen2", seed=7)
    groups = tuple(group for _, group, _ in PROJECTION_GROUPS)
    q_shape = tuple(decoder_layers(model)[0].self_attn.q_proj.weight.shape)
    calls = []

    def spied(x, weight, bias=None):
        calls.append(tuple(weight.shape))
        return weight_major_linear(x, weight, bias)

    several = {bucket: groups for bucket in ROW_BUCKETS[1:] + (PREFILL_BUCKET,)}  # one row: the parts
    products = RowProducts({(1, 1): {q_shape: "weight-major"}}, joined=several)
    engine = Engine(model, choose_kernels=False)
    monkeypatch.setitem(row_products.PRODUCTS, "weight-major", spied)
    engine.use_products(products)
    prompt = torch.tensor([[5, 9, 17, 33, 2, 8, 41, 60, 7, 3]])
    for width in (1, 4):
        cache_a, cache_b = engine.new_cache(10, 0, 4), engine.new_cache(10, 0, 4)
        forward_full(model, prompt, 0, cache_a)
        engine.full(prompt, 0, cache_b)
        calls.clear()
        block = torch.arange(11, 11 + width)[None]
        plain = forward_full(model, block, 10, cache_a)
        ours = engine.full(block, 10, cache_b) if width == 1 else engine.verify(block, 10, cache_b)
        torch.testing.assert_close(ours, plain, rtol=1e-5, atol=1e-5)
        # One row: each layer's q projection through its own chosen product (as its o projection, of the same
        # shape, is); four rows: q/k/v through the joined product, and nothing through weight-major.
        assert calls == ([q_shape] * 2 * len(decoder_layers(model)) if width == 1 else [])
    parts = [getattr(getattr(layer, owner), n).weight for layer in decoder_layers(model)
             for owner, _, names in PROJECTION_GROUPS for n in names]
    assert products.extra_bytes(model) == sum(w.numel() * w.element_size() for w in parts)  # weight-major: no copy
    assert "qkv_proj over rows 2-3, rows 4-5, rows 6-9, rows 10-13, rows 14-17, rows 18+," in products.summary()


@pytest.mark.parametrize("slow, joins", [
    ("joined", "nowhere"),
    ("parts", "everywhere"),
    # Joined would win over one row only, while the parts keep packed copies for every other: not joined.
    ("joined over several rows, parts over one", "nowhere"),
])
def test_a_projection_group_joins_only_where_one_product_times_faster(slow, joins, monkeypatch, tmp_path):
    monkeypatch.setenv("SELFSPEC_CACHE", str(tmp_path))
    model = tiny_model("llama", seed=2)
    stacked, joined = [], []  # the stacked weights and the copies made of them to be joined (held: ids stay theirs)

    def stacking(parts):
        made = stacked_linear(parts)
        stacked.append(made.weight)
        return made

    def prepared(weight):
        copy = weight.clone()
        if any(weight is w for w in stacked):
            joined.append(copy)
        return copy

    def packed(x, weight, bias=None):  # oneDNN's packed product, on any build, slow as the case says
        is_joined, rows = any(weight is w for w in joined), x.numel() // x.shape[-1]
        if {"joined": is_joined, "parts": not is_joined,
                "joined over several rows, parts over one": is_joined == (rows > 1)}[slow]:
            time.sleep(0.002)
        return F.linear(x, weight, bias)

    monkeypatch.setattr(row_products, "stacked_linear", stacking)
    monkeypatch.setitem(row_products.PREPARED, "onednn-packed", prepared)
    monkeypatch.setitem(row_products.PRODUCTS, "onednn-packed", packed)
    monkeypatch.setattr(row_products, "onednn_packing_available", lambda device, dtype: True)  # on any build
    for other in ("linear", "weight-major", "thread-split"):
        monkeypatch.setitem(row_products.PRODUCTS, other, lambda x, w, b=None: time.sleep(0.004) or F.linear(x, w, b))
    products = choose_row_products(model)  # packed wins every shape's buckets: the parts run it too
    assert {p for names in products.chosen.values() for p in names.values()} == {"onednn-packed"}
    every_bucket = {bucket: tuple(group for _, group, _ in PROJECTION_GROUPS) for bucket in ROW_BUCKETS + (PREFILL_BUCKET,)}
    assert products.joined == {"nowhere": {}, "everywhere": every_bucket}[joins]
    assert joined  # the joined candidate was timed over copies of stacked weights
    timed = [c.name for c in products.choices if "joined" in c.milliseconds]
    assert timed == {"joined": ["separate"] * 4, "parts": ["joined"] * 4,
                     "joined over several rows, parts over one": ["joined", "separate"] * 2}[slow]


def test_without_onednns_packing_a_group_joins_through_torchs_own_product_on_a_stacked_copy(monkeypatch, tmp_path):
    monkeypatch.setenv("SELFSPEC_CACHE", str(tmp_path))
    model = tiny_model("llama", seed=2)
    stacked = []  # the stacked weights made to be joined: `linear` reads them as they are

    def stacking(parts):
        made = stacked_linear(parts)
        stacked.append(made.weight)
        return made

    def slow_unless_stacked(x, weight, bias=None):  # as one wide product of a GPU runs against narrow ones
        if not any(weight is w for w in stacked):
            time.sleep(0.002)
        return F.linear(x, weight, bias)

    monkeypatch.setattr(row_products, "stacked_linear", stacking)
    monkeypatch.setattr(row_products, "onednn_available", lambda device: False)  # a device without oneDNN
    monkeypatch.setattr(row_products, "onednn_packing_available", lambda device, dtype: False)
    monkeypatch.setitem(row_products.PRODUCTS, "linear", slow_unless_stacked)
    for other in ("weight-major", "thread-split"):
        monkeypatch.setitem(row_products.PRODUCTS, other, lambda x, w, b=None: time.sleep(0.004) or F.linear(x, w, b))
    products = choose_row_products(model)
    every_bucket = {bucket: tuple(group for _, group, _ in PROJECTION_GROUPS) for bucket in ROW_BUCKETS + (PREFILL_BUCKET,)}
    assert products.chosen == {bucket: {} for bucket in ROW_BUCKETS + (PREFILL_BUCKET,)}  # linear everywhere
    assert products.joined == every_bucket and products.joined_product == "linear"
    assert "joined into one linear product: qkv_proj over every row count" in products.summary()
    assert products.to_dict()["joined_product"] == "linear"
    monkeypatch.setattr(row_products, "packing_fits", lambda model: False)  # no room for the stacked copies
    assert choose_row_products(model).joined == {}


def test_the_choice_follows_the_timings_per_shape_and_bucket(monkeypatch, tmp_path):
    monkeypatch.setenv("SELFSPEC_CACHE", str(tmp_path))
    model = tiny_model("llama", seed=1)
    shapes = set(linear_weights(model))
    assert (96, 32) in shapes and (64, 32) in shapes  # lm_head and the MLP's up projection
    # Make the weight-major product slow for every shape but the lm_head's, linear slow for the head only,
    # thread-split always, oneDNN's packed product for all but the head over a prefill's rows: the few-row
    # buckets must take weight-major for the head, prefills (whose candidates are only the products made
    # for many rows) oneDNN for it.
    seen = set()

    def slowed(product, unless=lambda shape, rows: False):
        def run(x, weight, bias=None):
            seen.add(id(weight))
            if not unless(tuple(weight.shape), x.numel() // x.shape[-1]):
                time.sleep(0.002)
            return product(x, weight, bias)
        return run

    head = (96, 32)
    monkeypatch.setitem(row_products.PRODUCTS, "linear", slowed(F.linear, unless=lambda shape, rows: shape != head))
    monkeypatch.setitem(row_products.PRODUCTS, "weight-major",
                        slowed(narrow_linear.weight_major_linear, unless=lambda shape, rows: shape == head))
    monkeypatch.setitem(row_products.PRODUCTS, "onednn-packed",
                        slowed(F.linear, unless=lambda shape, rows: shape == head and rows >= PREFILL_BUCKET[0]))
    monkeypatch.setitem(row_products.PRODUCTS, "thread-split", slowed(thread_split_linear))
    prepared = []  # the packed candidate is timed over copies made for it, as the tuned model will run it
    monkeypatch.setitem(row_products.PREPARED, "onednn-packed", lambda w: prepared.append(w.clone()) or prepared[-1])
    monkeypatch.setattr(row_products, "onednn_packing_available", lambda device, dtype: True)  # on any build
    products = choose_row_products(model)
    assert products.chosen == {bucket: {head: "weight-major"} for bucket in ROW_BUCKETS} | {
        PREFILL_BUCKET: {head: "onednn-packed"}}
    assert [set(c.milliseconds) for c in products.choices] == len(shapes) * (
        len(ROW_BUCKETS) * [{"linear", "weight-major", "onednn-packed", "thread-split"}] + [{"linear", "onednn-packed"}]
    ) + 2 * len(PROJECTION_GROUPS) * [{"separate", "joined"}]  # then each projection group, over one row and nine
    # The parts' own product (linear) is fast here and the joined one (oneDNN's packed) slow: nothing joined.
    assert products.joined == {}
    assert {id(w) for w in prepared} <= seen and len(prepared) > len(shapes)
    assert "weight-major for 96x32" in products.summary() and "rows 18+: onednn-packed for 96x32" in products.summary()
    assert products.to_dict()["chosen"]["rows 2-3"] == {"96x32": "weight-major"}
    # Timed as a forward meets them: every weight of each shape in turn, not one hot weight.
    assert {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Linear)} <= seen


def test_a_shape_is_timed_over_a_streams_worth_of_weights_and_a_large_one_over_its_first_rows(monkeypatch):
    monkeypatch.setattr(row_products, "STREAM_BYTES", 1000 * 4 * 10)  # ten rows of 1000 float32 inputs
    small = [torch.zeros(4, 1000) for _ in range(5)]
    assert [w is s for w, s in zip(streamed(small), small)] == [True] * 3  # 12 rows: past ten, whole weights
    head = torch.arange(50 * 1000, dtype=torch.float32).view(50, 1000)
    (timed,) = streamed([head])
    assert timed.shape == (10, 1000) and torch.equal(timed, head[:10])
    assert streamed([head[:6]])[0].shape == (6, 1000)  # smaller than a stream: all of it
    # A device whose last-level cache holds five such rows streams four caches' worth: twenty rows.
    monkeypatch.setattr(row_products, "device_cache_bytes", lambda device: 1000 * 4 * 5)
    assert len(streamed(small)) == 5 and streamed([head])[0].shape == (20, 1000)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma2"])
def test_verification_forward_gives_the_full_models_logits(arch, monkeypatch, tmp_path):
    monkeypatch.setenv("SELFSPEC_CACHE", str(tmp_path))
    model = tiny_model(arch, seed=4)
    other = "onednn" if onednn_available(torch.device("cpu")) else "weight-major"
    everything = RowProducts({b: {shape: ("weight-major", other, "thread-split")[i % 3] for shape in linear_weights(model)}
                              for i, b in enumerate(ROW_BUCKETS)})
    engine = Engine(model, choose_kernels=False)
    engine.use_products(everything)  # every product another than linear, whatever this machine prefers
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


def _exactly(x, weight, bias=None):
    """x W^T (+ b) of 16-bit tensors summed in float64, where their few products add up exactly in any order:
    a product that gives every row the same whatever the rows around it, on any machine."""
    out = x.double() @ weight.double().T
    return (out if bias is None else out + bias.double()).to(x.dtype)


def _summing_one_row_otherwise(x, weight, bias=None):
    """A product whose one-row result is a hair off what it gives that row among others (as oneDNN's one-row
    kernel sums a long row in another order)."""
    out = _exactly(x, weight, bias)
    return out * 1.01 if x.numel() == x.shape[-1] else out


def _summing_in_three_rows_otherwise(x, weight, bias=None):
    out = _exactly(x, weight, bias)
    return out * 1.01 if x.numel() == 3 * x.shape[-1] else out


def test_rows_agree_tells_a_product_that_gives_a_row_otherwise_among_others():
    from functools import partial
    torch.manual_seed(0)
    weight, x = torch.randn(12, 8).to(torch.bfloat16), torch.randn(24, 8).to(torch.bfloat16)
    assert row_products.rows_agree(lambda rows: partial(_exactly, weight=weight), x, 5)
    assert not row_products.rows_agree(lambda rows: partial(_summing_one_row_otherwise, weight=weight), x, 5)
    assert not row_products.rows_agree(lambda rows: partial(_summing_in_three_rows_otherwise, weight=weight), x, 5)
    # Two products, one for one row, another for several, agree where their sums do.
    assert row_products.rows_agree(
        lambda rows: partial(_exactly if rows == 1 else _summing_one_row_otherwise, weight=weight), x, 5)


def _decoding_names(products: RowProducts, shape) -> set[str]:
    return {products.chosen[b].get(shape, row_products.INCUMBENT) for b in row_products.DECODE_BUCKETS}


def test_in_16_bits_products_that_give_rows_otherwise_are_replaced_by_exact_ones(monkeypatch, tmp_path):
    monkeypatch.setenv("SELFSPEC_CACHE", str(tmp_path))
    # Stand-ins for the machine's products (no oneDNN needed): "thread-split" sums three rows otherwise,
    # "onednn-packed" one row alone, and its variant that runs one row as two gives what it gives among others.
    for name in ("linear", "weight-major"):
        monkeypatch.setitem(row_products.PRODUCTS, name, _exactly)
    monkeypatch.setitem(row_products.PRODUCTS, "thread-split", _summing_in_three_rows_otherwise)
    monkeypatch.setitem(row_products.PRODUCTS, "onednn-packed", _summing_one_row_otherwise)
    monkeypatch.setitem(row_products.PRODUCTS, row_products.ONE_ROW_AS_TWO["onednn-packed"], _exactly)
    monkeypatch.setitem(row_products.PREPARED, "onednn-packed", lambda w: w)
    monkeypatch.setitem(row_products.PREPARED, row_products.ONE_ROW_AS_TWO["onednn-packed"], lambda w: w)
    model = tiny_model("llama").to(torch.bfloat16)
    down, head = (32, 64), (96, 32)
    chosen = {b: {} for b in ROW_BUCKETS + (PREFILL_BUCKET,)}
    for bucket in ROW_BUCKETS:
        chosen[bucket][down] = "onednn-packed"
        chosen[bucket][head] = "thread-split" if bucket == (2, 3) else "weight-major"
    joined = {b: ("qkv_proj", "gate_up_proj") for b in ROW_BUCKETS[1:]}  # q/k/v and gate/up joined over 2+ rows
    products = {name: row_products.PRODUCTS[name] for name in ("linear", "weight-major", "thread-split", "onednn-packed")}
    timed = {(head, "linear"): 5.0, (head, "weight-major"): 1.0, (head, "thread-split"): 0.5}
    assert row_products._exact_rows(model, chosen, joined, products, "onednn-packed", timed) is True
    # The down projection keeps its product over several rows and runs one row as two.
    assert chosen[ROW_BUCKETS[0]][down] == row_products.ONE_ROW_AS_TWO["onednn-packed"]
    assert all(chosen[b][down] == "onednn-packed" for b in ROW_BUCKETS[1:])
    # The head takes the fastest exact product over every bucket: thread-split is faster but not exact.
    assert _decoding_names(RowProducts(chosen), head) == {"weight-major"}
    # A group's joined product ("onednn-packed" here) gives one row otherwise: it runs joined nowhere.
    assert not any(joined.values())
    tuned = RowProducts(chosen, joined=joined).tuned(model)
    for module in (decoder_layers(tuned)[0].mlp.down_proj, tuned.lm_head):  # as the engine will run them
        inputs = torch.randn(1, 17, module.in_features).to(torch.bfloat16)
        alone = torch.cat([module(inputs[:, j:j + 1]) for j in range(17)], dim=1)
        for rows in range(2, 18):
            assert torch.equal(module(inputs[:, :rows]), alone[:, :rows])


def test_a_shape_with_no_exact_product_leaves_the_products_inexact(monkeypatch, tmp_path):
    monkeypatch.setenv("SELFSPEC_CACHE", str(tmp_path))
    for name in ("linear", "weight-major", "thread-split"):
        monkeypatch.setitem(row_products.PRODUCTS, name, _summing_in_three_rows_otherwise)
    model = tiny_model("llama").to(torch.bfloat16)
    chosen = {b: {} for b in ROW_BUCKETS + (PREFILL_BUCKET,)}
    products = {name: row_products.PRODUCTS[name] for name in ("linear", "weight-major", "thread-split")}
    assert row_products._exact_rows(model, chosen, {}, products, "linear", {}) is False


def test_a_later_load_reads_the_exactness_verdicts_instead_of_checking_again(monkeypatch, tmp_path):
    monkeypatch.setenv("SELFSPEC_CACHE", str(tmp_path))
    calls = []

    def counted(product):
        return lambda x, weight, bias=None: calls.append(x.shape[1]) or product(x, weight, bias)
    monkeypatch.setitem(row_products.PRODUCTS, "linear", counted(_exactly))
    monkeypatch.setitem(row_products.PRODUCTS, "thread-split", counted(_summing_in_three_rows_otherwise))
    products = {name: row_products.PRODUCTS[name] for name in ("linear", "thread-split")}
    outcomes = []
    for load in range(2):
        model = tiny_model("llama").to(torch.bfloat16)
        chosen = {b: {} for b in ROW_BUCKETS + (PREFILL_BUCKET,)}
        head = tuple(model.lm_head.weight.shape)
        for bucket in ROW_BUCKETS:
            chosen[bucket][head] = "thread-split"
        timed = {(head, "thread-split"): 0.5, (head, "linear"): 1.0}
        exact = row_products._exact_rows(model, chosen, {}, products, "linear", timed)
        outcomes.append((exact, _decoding_names(RowProducts(chosen), head), len(calls)))
    (first_exact, first_names, checked), (second_exact, second_names, after) = outcomes
    assert first_exact and second_exact and first_names == second_names == {"linear"}
    assert checked > 0 and after == checked  # the second load ran no product to check


def test_float32_products_are_not_checked_and_16_bit_ones_are(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFSPEC_CACHE", str(tmp_path))
    assert choose_row_products(tiny_model("llama")).rows_exact is None
    assert choose_row_products(tiny_model("llama").to(torch.bfloat16)).rows_exact is not None
