"""The draft's screened head: int2 weights over the whole vocabulary, its best tokens scored again from the
model's own head (lowbit.ScreenedHead, csrc/screened_head.cpp)."""

from __future__ import annotations

import pytest
import torch

from selfspec import DraftModel, DraftSettings, Sampling, SkipProfile, autoregressive, self_speculative
from selfspec.engine import lowbit
from selfspec.engine.lowbit import (INT8_DOT_KINDS, ScreenedHead, head_builders, kernel_builders,
                                    pack_int2_for_int8_dot, quantize_asymmetric)
from selfspec.engine.native_build import native_extension
from test_engine import _chi_square_p_value, _exact_second_third, _sampled_second_third, generated
from tiny_models import tiny_model

CPU = torch.device("cpu")
INSTRUCTIONS = ("vnni", "avx2")


@pytest.fixture(autouse=True)
def no_kernel_cache(monkeypatch):
    monkeypatch.setenv("SELFSPEC_KERNEL_CACHE", "0")  # choices made by tests stay out of the user's cache


def _runs(extension, kind: int) -> bool:
    """Whether this CPU has the instructions of an 8-bit dot product kind (the product refuses otherwise)."""
    q, scale, low = quantize_asymmetric(torch.zeros(16, 32), 32, 2)
    try:
        extension.int8_dot_mm(kind, torch.zeros(1, 32), *pack_int2_for_int8_dot(q, scale, low))
    except RuntimeError as error:
        assert "lacks the instructions" in str(error)
        return False
    return True


@pytest.fixture(params=INSTRUCTIONS)
def int2_kind(request):
    extension = native_extension()
    if extension is None:
        pytest.skip("no C++ extension on this machine")
    kind = INT8_DOT_KINDS[2, request.param]
    if not _runs(extension, kind):
        pytest.skip(f"this CPU lacks the {request.param} instructions")
    return extension, kind


def test_int2_quantisation_rounds_each_weight_to_the_nearest_of_four_levels():
    torch.manual_seed(0)
    w = torch.randn(4, 64)
    q, scale, low = quantize_asymmetric(w, 32, 2)
    assert q.min() >= 0 and q.max() <= 3
    groups = w.view(4, 2, 32)
    assert torch.equal(low, groups.amin(-1)) and torch.allclose(scale * 3, groups.amax(-1) - groups.amin(-1))
    back = (q.view(4, 2, 32) * scale[..., None] + low[..., None]).view(4, 64)
    assert (back - w).abs().max() <= scale.max() / 2 + 1e-6  # within half a level of every weight


def test_the_int2_layout_holds_every_weight_where_the_kernel_reads_it():
    torch.manual_seed(0)
    out_features, in_features = 32, 64
    q = torch.randint(0, 4, (out_features, in_features), dtype=torch.int32)
    scale, low = torch.rand(out_features, 2), torch.randn(out_features, 2)
    packed, scales = pack_int2_for_int8_dot(q, scale, low)
    assert packed.shape == (2, 2, 128) and packed.dtype == torch.uint8
    assert scales.shape == (2, 2, 2, 16) and scales.dtype == torch.float16
    for o in range(out_features):
        block, r = divmod(o, 16)
        for i in range(in_features):
            group, within = divmod(i, 32)
            chunk, rest = divmod(within, 16)
            shift, byte = divmod(rest, 4)
            stored = int(packed[block, group, 64 * chunk + 4 * r + byte]) >> (2 * shift) & 3
            assert stored == int(q[o, i]), (o, i)
        for group in range(2):
            assert scales[block, group, 0, r] == scale[o, group].half()
            assert scales[block, group, 1, r] == low[o, group].half()


def test_the_int2_product_is_the_dequantised_product_up_to_the_activations_rounding(int2_kind):
    extension, kind = int2_kind
    torch.manual_seed(1)
    w, x = torch.randn(48, 96), torch.randn(3, 96)
    q, scale, low = quantize_asymmetric(w, 32, 2)
    packed, scales = pack_int2_for_int8_dot(q, scale, low)
    # The weights as the kernel holds them: scales and lows in float16.
    held = (q.view(48, 3, 32).double() * scale.half().double()[..., None] + low.half().double()[..., None]).view(48, 96)
    exact = x.double() @ held.t()
    # Each group of 32 activations is rounded to int8 against its largest magnitude: half a step each at most.
    activation_step = (x.abs().reshape(3, 3, 32).amax(-1) / 127).repeat_interleave(32, 1).double()
    worst = (activation_step / 2) @ held.abs().t()
    got = extension.int8_dot_mm(kind, x, packed, scales).double()
    assert ((got - exact).abs() <= worst * 1.01 + 1e-4).all()


def test_screened_logits_rescore_the_screens_best_from_the_models_weights(int2_kind):
    extension, kind = int2_kind
    torch.manual_seed(2)
    vocabulary, width, candidates = 512, 64, 24
    weight = torch.randn(vocabulary, width).bfloat16()
    packed, scales = pack_int2_for_int8_dot(*quantize_asymmetric(weight, 32, 2))
    hidden = torch.randn(3, width)
    screen = extension.int8_dot_mm(kind, hidden, packed, scales)
    logits = extension.screened_logits(hidden, kind, packed, scales, weight, candidates)
    assert logits.shape == (3, vocabulary) and logits.dtype == torch.float32
    exact = hidden.double() @ weight.double().t()
    for row in range(3):
        best = set(screen[row].topk(candidates).indices.tolist())
        rest = sorted(set(range(vocabulary)) - best)
        torch.testing.assert_close(logits[row, sorted(best)].double(), exact[row, sorted(best)], atol=1e-4, rtol=1e-5)
        assert torch.equal(logits[row, rest], screen[row, rest])
    # Leading dimensions are kept, as a linear layer keeps them.
    assert extension.screened_logits(hidden[None], kind, packed, scales, weight, candidates).shape == (1, 3, vocabulary)


def test_screened_logits_refuse_what_they_cannot_read(int2_kind):
    extension, kind = int2_kind
    weight = torch.randn(64, 32)
    packed, scales = pack_int2_for_int8_dot(*quantize_asymmetric(weight, 32, 2))
    hidden = torch.randn(1, 32)
    with pytest.raises(RuntimeError, match="the screen's rows"):
        extension.screened_logits(hidden, kind, packed, scales, weight[:48], 8)
    with pytest.raises(RuntimeError, match="between 1 and 64 candidates"):
        extension.screened_logits(hidden, kind, packed, scales, weight, 0)
    with pytest.raises(RuntimeError, match="the input has 64 features"):
        extension.screened_logits(torch.randn(1, 64), kind, packed, scales, weight, 8)


def test_the_screened_head_is_a_candidate_only_for_heads_it_can_read():
    if native_extension() is None:
        pytest.skip("no C++ extension on this machine")
    builders = head_builders(kernel_builders("int8", torch.float32, CPU), CPU)
    assert {"int2-screened", "int2-screened-avx2"} <= set(builders)
    with pytest.raises(RuntimeError, match="without a bias"):
        builders["int2-screened-avx2"](torch.nn.Linear(32, 64, bias=True))
    with pytest.raises(RuntimeError, match="16-row blocks"):
        builders["int2-screened-avx2"](torch.nn.Linear(32, 40, bias=False))
    assert head_builders({"x": None}, torch.device("meta")) == {"x": None}  # elsewhere: the head's own kernels


def _screened_draft(model, profile, instructions_kernel):
    return DraftModel(model, profile, weights="int4", kernels={"head": instructions_kernel})


def _available_screen() -> str:
    """The screened head this CPU runs (its fastest instructions first)."""
    extension = native_extension()
    if extension is None:
        pytest.skip("no C++ extension on this machine")
    for instructions in INSTRUCTIONS:
        if _runs(extension, INT8_DOT_KINDS[2, instructions]):
            return "int2-screened" + ("" if instructions == "vnni" else "-avx2")
    pytest.skip("this CPU lacks AVX2")


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_greedy_drafts_through_a_screened_head_are_token_identical(arch, monkeypatch):
    monkeypatch.setattr(lowbit, "SCREEN_CANDIDATES", 4)  # few candidates: the draft's choices often differ
    model = tiny_model(arch)
    layers = model.config.num_hidden_layers
    draft = _screened_draft(model, SkipProfile(layers, attn=[1], mlp=[2]), _available_screen())
    assert isinstance(draft.head.lm_head, ScreenedHead)
    assert draft.lowbit.kernels[f"int8 {model.config.vocab_size}x{model.config.hidden_size} head"].startswith(
        "int2-screened")
    for prompt in ([3, 4, 5], [9, 8, 7, 6, 5, 4, 3, 2, 1, 9, 8, 7, 6]):
        expected = generated(autoregressive(model, prompt, 24))
        for settings in (DraftSettings(max_draft=3, exit="off"), DraftSettings(max_draft=4, controller=True)):
            assert generated(self_speculative(model, prompt, draft, 24, settings=settings)) == expected


def test_a_screened_heads_memory_is_its_int2_screen():
    model = tiny_model("llama")
    head = model.get_output_embeddings()
    rows, cols = head.weight.shape
    int8 = DraftModel(model, SkipProfile(4), weights="int4", kernels={"head": "int8-int8dot-avx2"})
    screened = _screened_draft(model, SkipProfile(4), _available_screen())
    # int2: a quarter of a byte a weight plus a float16 scale and low per group of 32; int8: a byte a weight plus a
    # float32 scale a row.
    assert int8.extra_bytes - screened.extra_bytes == (rows * cols + 4 * rows) - (rows * cols // 4 + rows * cols // 32 * 4)


@pytest.fixture(scope="module")
def sixteen_token_model():
    model = tiny_model("llama", vocab_size=16, seed=3)
    model.generation_config.eos_token_id = None  # every draw yields 4 tokens
    return model


def test_sampling_through_a_screened_head_matches_the_full_model_distribution(sixteen_token_model, monkeypatch):
    monkeypatch.setattr(lowbit, "SCREEN_CANDIDATES", 3)  # most of the draft's distribution from the int2 screen
    model, prompt, sampling, draws = sixteen_token_model, [0, 2, 4], Sampling(temperature=1.0), 800
    draft = _screened_draft(model, SkipProfile(4, attn=[1, 2, 3], mlp=[0, 2, 3]), _available_screen())
    assert isinstance(draft.head.lm_head, ScreenedHead)
    expected = _exact_second_third(model, prompt, sampling) * draws
    observed = _sampled_second_third(model, prompt, draft, sampling, draws)
    assert _chi_square_p_value(observed, expected) > 1e-3
