"""Low-bit drafts: lossless with any architecture and profile, honest about memory, model untouched."""

from __future__ import annotations

import random

import pytest
import torch

from selfspec import DraftModel, DraftSettings, SkipProfile, autoregressive, self_speculative
from selfspec.engine.cache import new_cache
from selfspec.engine.architectures import PLAIN_LLAMA_MODEL_TYPES
from selfspec.engine.lowbit import dequantize_int4_coded, kernel_builders, low_bit_shadow, quantize_int4_coded
from selfspec.engine.runtime import Engine
from selfspec.engine.shadow import linear_slots
from test_engine import _assert_same, _snapshot, generated
from tiny_models import CONFIGS, tiny_model

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def no_kernel_cache(monkeypatch):
    monkeypatch.setenv("SELFSPEC_KERNEL_CACHE", "0")  # choices made by tests stay out of the user's cache


@pytest.mark.parametrize("weights", ["int8", "int4"])
@pytest.mark.parametrize("arch", list(CONFIGS))
def test_greedy_low_bit_drafts_are_token_identical(arch, weights):
    model = tiny_model(arch)
    layers = model.config.num_hidden_layers
    rng = random.Random(arch + weights)
    prompts = [[rng.randrange(2, 96) for _ in range(n)] for n in (3, 17)]
    profiles = [SkipProfile(layers), SkipProfile(layers, attn=[0, 2], mlp=[1]),
                SkipProfile(layers, attn=rng.sample(range(layers), 2), mlp=rng.sample(range(layers), 3))]
    settings = [DraftSettings(max_draft=3, exit="off"), DraftSettings(max_draft=5, exit="adaptive"),
                DraftSettings(max_draft=4, exit="off", controller=True)]
    expected = {tuple(p): generated(autoregressive(model, p, 24)) for p in prompts}
    for profile, setting in zip(profiles, settings):
        draft = DraftModel(model, profile, weights=weights)
        for prompt in prompts:
            got = generated(self_speculative(model, prompt, draft, 24, settings=setting))
            assert got == expected[tuple(prompt)], (profile, setting, prompt)


FIXED_KERNELS = {"int8": {"int8": "int8pack"}, "int4": {"int4": "int4pack-float32", "int8": "int8pack"}}


@pytest.mark.parametrize("query_form", ["grouped", "packed"])
@pytest.mark.parametrize("weights", ["int8", "int4"])
@pytest.mark.parametrize("arch", list(CONFIGS))
def test_fused_sublayers_compute_what_the_layers_own_modules_compute(arch, weights, query_form):
    """The reference is transformers' own forward of the unfused low-bit shadow (the same quantised
    weights, every module the model's own class); the draft must match it over a whole prompt and
    token by token through the static cache (one query: in either attention form), and fuse exactly the
    Llama-family layers."""
    model = tiny_model(arch)
    layers = model.config.num_hidden_layers
    reference, _ = low_bit_shadow(model, weights, FIXED_KERNELS[weights], fuse=False)
    ids = torch.tensor([[5, 9, 17, 33, 2, 8, 41, 60, 7, 3, 11, 70]])
    with torch.inference_mode():
        expected = reference(ids).logits[0]
        kernels = FIXED_KERNELS[weights] | {"attention": query_form}
        draft = DraftModel(model, SkipProfile(layers), weights=weights, kernels=kernels)
        assert draft.lowbit.fused == (arch in PLAIN_LLAMA_MODEL_TYPES)
        assert draft.lowbit.fused == any(k.startswith("attention") for k in draft.lowbit.kernels)
        whole = draft(ids, torch.arange(ids.shape[1])[None], new_cache())[0]
        cache = new_cache(layers, 32)
        stepwise = torch.cat([draft(ids[:, i:i + 1], torch.tensor([[i]]), cache)[0] for i in range(ids.shape[1])])
    torch.testing.assert_close(whole, expected, atol=2e-4, rtol=2e-4)
    torch.testing.assert_close(stepwise, expected, atol=2e-4, rtol=2e-4)


def _expected_bytes(model, weights: str) -> int:
    """Independently: int8 = 1 byte a weight + a float32 scale per row; int4 = half a byte a weight +
    a float32 scale and zero per 32-weight group, except the output head, which stays int8."""
    total = 0
    head = model.get_output_embeddings()
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        rows, cols = module.weight.shape
        if weights == "int4" and module is not head:
            total += rows * cols // 2 + (cols // 32) * rows * 2 * 4
        else:
            total += rows * cols + rows * 4
    return total


@pytest.mark.parametrize("weights,kernels", [("int8", {"int8": "int8pack"}),
                                             ("int4", {"int4": "int4pack-float32", "int8": "int8pack"})])
def test_memory_is_counted_exactly(weights, kernels):
    model = tiny_model("qwen2")
    draft = DraftModel(model, SkipProfile(4), weights=weights, kernels=kernels)
    assert draft.extra_bytes == _expected_bytes(model, weights)
    assert DraftModel(model, SkipProfile(4)).extra_bytes == 0  # the paper's draft adds nothing


def test_the_shadow_shares_every_tensor_and_leaves_the_model_untouched():
    model = tiny_model("llama", tie_word_embeddings=True)
    model.tie_weights()
    before = _snapshot(model)
    pointers = {name: p.data_ptr() for name, p in model.named_parameters()}
    draft = DraftModel(model, SkipProfile(4, attn=[1]), weights="int4")
    list(self_speculative(model, [3, 4, 5], draft, 20, settings=DraftSettings(max_draft=3)))
    _assert_same(before, _snapshot(model))
    assert pointers == {name: p.data_ptr() for name, p in model.named_parameters()}
    shadow = draft.walk.decoder
    assert shadow is not model.model
    assert shadow.embed_tokens.weight is model.model.embed_tokens.weight  # shared, not copied
    assert shadow.layers[0].input_layernorm.weight is model.model.layers[0].input_layernorm.weight
    assert not linear_slots(shadow)  # every linear of the draft reads low-bit weights
    assert all(isinstance(m, torch.nn.Linear) for _, _, m in linear_slots(model))


@pytest.mark.parametrize("weights", ["int8", "int4"])
def test_every_kernel_computes_the_dequantised_product(weights):
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48, bias=True)
    x = torch.randn(3, 64)
    w = linear.weight.detach()
    if weights == "int8":  # symmetric per row: the error of each weight is at most half a step
        step = (w.abs().amax(1, keepdim=True) / 127).expand(48, 64)
    else:  # asymmetric per 32-weight group
        groups = w.reshape(48, 2, 32)
        step = ((groups.amax(-1) - groups.amin(-1)) / 15).repeat_interleave(32, 1)
    worst = (x.abs() @ (step / 2).t()).max()  # the largest output error weight rounding alone allows
    if weights == "int4":  # torch's int4 products, and the 8-bit dot products' byte codes of each group's step and
        # middle (zero) in steps of a row's largest / 255 and / 127: a step up to one code larger (half of it a
        # weight), the middle up to half a code off (a weight at the end of the group's range off by that too)
        scale_code_step = step.amax(1, keepdim=True) / 255
        middle = (groups.amin(-1) + 8 * (groups.amax(-1) - groups.amin(-1)) / 15)
        zero_code_step = (middle.abs().amax(1, keepdim=True) / 127).expand(48, 64)
        coded_worst = (x.abs() @ ((step + scale_code_step) / 2 + zero_code_step / 2).t()).max()
    # The 8-bit dot products round each group of 32 activations to int8 against its largest magnitude too.
    activation_step = (x.abs().reshape(3, 2, 32).amax(-1) / 127).repeat_interleave(32, 1)
    int8_activations = ((activation_step / 2) @ (w.abs() + step / 2).t()).max()
    exact = linear(x)
    names = kernel_builders(weights, torch.float32, CPU)
    assert {f"{weights}-int8dot", f"{weights}-int8dot-avx2"} <= set(names)  # on every CPU; raise where they cannot run
    for name, build in names.items():
        try:
            layer = build(linear)
        except RuntimeError:
            assert "-int8dot" in name, name  # only a CPU without AVX512-VNNI (or AVX2) may lack a kernel
            continue
        assert layer.bias is linear.bias
        bf16 = 0.02 * exact.abs().max() if "bfloat16" in name else 0  # bf16 activations round too
        rounded = int8_activations if "-int8dot" in name else 0
        bound = coded_worst if weights == "int4" and "-int8dot" in name else worst
        assert (layer(x) - exact).abs().max() <= bound * 1.01 + bf16 + rounded + 1e-5, name


def test_bad_draft_weights_are_refused():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="not among the attention kernels.*grouped, packed"):
        DraftModel(model, SkipProfile(4), weights="int8", kernels={"attention": "sideways"})
    with pytest.raises(ValueError, match="draft weights must be one of full, int8, int4"):
        DraftModel(model, SkipProfile(4), weights="int3")
    with pytest.raises(ValueError, match="not among the int8 kernels"):
        DraftModel(model, SkipProfile(4), weights="int8", kernels={"int8": "magic"})


# --- auto: measure the candidates, keep the one predicted fastest ----------------------------------


def test_auto_measures_each_candidate_within_budget_and_keeps_the_best(monkeypatch, tmp_path, quiet_machine):
    from selfspec.profiles.draft_weights import build_draft, model_bytes

    model = tiny_model("qwen3")
    profile = SkipProfile(4, mlp=[2])
    draft, choice = build_draft(model, profile, "auto", calibration=[[5, 6, 7, 8]], max_draft=3, key="tiny")
    assert choice.budget_bytes == model_bytes(model) // 2 and not choice.cached
    names = {"full", "int8", "int4"}
    assert {c.weights for c in choice.candidates} == names | {f"{n} skip-nothing" for n in names}
    best = max((c for c in choice.candidates if c.bound is not None), key=lambda c: c.bound)
    assert choice.weights == best.weights and draft.weights == best.weights.split()[0]
    assert draft.profile == (profile if " " not in best.weights else SkipProfile(4))
    for c in choice.candidates:
        if c.bound is not None:  # the bound is the cost model's at the candidate's own numbers
            e = sum(c.acceptance ** i for i in range(c.best_k + 1))
            assert c.bound == pytest.approx(e / (c.best_k * c.c + c.v[c.best_k]), rel=1e-3)
    expected = generated(autoregressive(model, [9, 10], 16))
    assert generated(self_speculative(model, [9, 10], draft, 16, settings=DraftSettings(max_draft=3))) == expected

    _, none = build_draft(model, profile, "auto", calibration=[[5, 6, 7, 8]], budget_bytes=0, key="tiny")
    assert none.weights.split()[0] == "full"
    assert {c.weights: c.note for c in none.candidates if c.note} == {"int8": "over the memory budget",
                                                                      "int4": "over the memory budget"}

    monkeypatch.setenv("SELFSPEC_KERNEL_CACHE", "1")
    monkeypatch.setenv("SELFSPEC_CACHE", str(tmp_path))
    _, first = build_draft(model, profile, "auto", calibration=[[5, 6, 7, 8]], key="tiny")
    again, second = build_draft(model, profile, "auto", calibration=[[5, 6, 7, 8]], key="tiny")
    assert second.cached and second.weights == first.weights and again.weights == first.weights.split()[0]


def test_auto_averages_acceptance_over_its_calibration_prompts(quiet_machine):
    from selfspec.profiles.calibration import BUILTIN
    from selfspec.profiles.draft_weights import build_draft, calibration_ids

    model = tiny_model("qwen3")
    profile = SkipProfile(4, mlp=[2])
    prompts = [[5, 6, 7, 8], [30, 31, 2, 9, 40, 41]]
    _, both = build_draft(model, profile, "auto", calibration=prompts, max_draft=3, key="tiny")
    alone = [build_draft(model, profile, "auto", calibration=[p], max_draft=3, key="tiny")[1] for p in prompts]
    for candidate in both.candidates:
        if candidate.acceptance is not None:
            each = [next(c.acceptance for c in a.candidates if c.weights == candidate.weights) for a in alone]
            assert candidate.acceptance == pytest.approx(sum(each) / 2, abs=1e-4), candidate.weights
    with pytest.raises(ValueError, match="calibration prompts' token ids"):
        build_draft(model, profile, "auto", calibration=[[5, 6], []], key="tiny")
    # Prompts whose continuation would not fit the context are left out (here the context holds 256 positions).
    long = list(range(2, 90)) * 3
    _, fitted = build_draft(model, profile, "auto", calibration=[prompts[0], long], max_draft=3, key="tiny")
    assert model.config.max_position_embeddings == 256 and len(long) + 32 >= 256
    assert [c.acceptance for c in fitted.candidates] == [c.acceptance for c in alone[0].candidates]
    # By default, one prompt of each kind the built-in set mixes.
    ids = calibration_ids(lambda text: [len(text), hash(text)])
    kinds = [kind for kind, text in BUILTIN if [len(text), hash(text)] in ids]
    assert len(ids) == 3 and sorted(kinds) == ["code", "qa", "summarisation"]


@pytest.mark.parametrize("text,expected", [("300MB", 300_000_000), ("1.5GiB", int(1.5 * 2**30)), ("0", 0),
                                           ("1234", 1234)])
def test_memory_sizes_parse(text, expected):
    from selfspec.profiles.draft_weights import parse_bytes

    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["lots", "-3MB", ""])
def test_bad_memory_sizes_are_refused(text):
    from selfspec.profiles.draft_weights import parse_bytes

    with pytest.raises(ValueError, match="memory size"):
        parse_bytes(text)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_16_bit_model_keeps_its_dtype_through_the_fused_draft(dtype):
    """The int4 kernels compute in bfloat16 whatever the model's dtype: a float16 model's residual stream and
    cache must stay float16 (float16 + bfloat16 would promote to float32 and fail the cache's write), and the
    fused draft must still compute what the unfused low-bit shadow's own modules compute."""
    model = tiny_model("llama").to(dtype)
    kernels = {"int4": "int4pack-bfloat16", "int8": "int8pack-bfloat16"}
    ids = torch.tensor([[5, 9, 17, 33, 2, 8, 41, 60, 7, 3, 11, 70]])
    engine = Engine(model, choose_kernels=False)
    cache = engine.new_cache(ids.shape[1], 4)
    engine.full(ids[:, :-1], 0, cache, last_only=True)  # the full model's prefill makes the cache float16
    draft = DraftModel(model, SkipProfile(4), weights="int4", kernels=kernels)
    logits = engine.draft(draft, ids[:, -1:], ids.shape[1] - 1, cache)
    reference, _ = low_bit_shadow(model, "int4", kernels, fuse=False)
    with torch.inference_mode():
        expected = reference(ids).logits[0, -1]
    assert logits.dtype == dtype
    torch.testing.assert_close(logits.float(), expected.float(), atol=0.25, rtol=0.05)  # 16-bit rounding, 4 layers


def test_int4_byte_codes_keep_every_weight_within_half_a_coded_step_and_the_middles_code():
    torch.manual_seed(1)
    w = torch.randn(32, 128) * 0.05
    w[5, 32:64] += 0.4  # a group far off the row's middle
    w[7] *= 1e-3  # a row of tiny weights: its steps are its own
    q, scale_code, zero_code, scale_step, zero_step = quantize_int4_coded(w, 32)
    assert q.min() >= 0 and q.max() <= 15 and scale_code.dtype == torch.uint8 and zero_code.dtype == torch.int8
    assert scale_code.min() >= 1 and zero_code.abs().max() <= 127
    groups = w.reshape(32, 4, 32)
    step = (groups.amax(-1) - groups.amin(-1)) / 15
    coded_step = scale_code.float() * scale_step.float()[:, None]
    assert (coded_step >= step * (1 - 1e-6)).all()  # rounded up: the grid spans the group
    assert (coded_step <= step + step.amax(1, keepdim=True) / 255 * 1.01).all()
    middle = groups.amin(-1) + 8 * step
    zero_error = (zero_code.float() * zero_step.float()[:, None] - middle).abs()
    assert (zero_error <= middle.abs().amax(1, keepdim=True) / 127 / 2 * 1.01).all()
    error = (dequantize_int4_coded(q, scale_code, zero_code, scale_step, zero_step) - w).abs().reshape(32, 4, 32)
    assert (error <= (coded_step / 2 + zero_error)[..., None] * 1.001 + 1e-9).all()
