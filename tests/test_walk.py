"""The engine's full-model forwards walk the layers themselves: their logits must be transformers' own, bit for bit."""

from __future__ import annotations

import pytest
import torch

from selfspec.engine import architectures, attention_forms, rms_norms
from selfspec.engine.architectures import PLAIN_LLAMA_MODEL_TYPES, direct_sublayers
from selfspec.engine.cache import new_cache
from selfspec.engine.runtime import Engine
from selfspec.engine.walk import LayerWalk
from tiny_models import CONFIGS, tiny_model

PROMPT = torch.tensor([[5, 9, 2, 41, 7, 7, 30]])


def _transformers_logits(model, tokens, start, cache, last_only=False):
    positions = torch.arange(start, start + tokens.shape[-1])[None]
    with torch.inference_mode():
        return model(input_ids=tokens, position_ids=positions, cache=cache, use_cache=True,
                     logits_to_keep=1 if last_only else 0).logits[0]


def _caches(static: bool, layers: int, reads_prefix: bool = False):
    """(ours, theirs). Where the walk reads only a static cache's filled prefix (sdpa on a CPU), it attends
    over the keys transformers' own dynamic cache holds, so that is what it must agree with."""
    ours = new_cache(layers, 64) if static else new_cache()
    theirs = new_cache(layers, 64) if static and not reads_prefix else new_cache()
    return ours, theirs


def _reads_prefix(model) -> bool:
    return model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("static", [True, False], ids=["static", "dynamic"])
@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_the_walk_gives_transformers_logits_bit_for_bit(arch, static):
    model = tiny_model(arch)
    engine = Engine(model, static_cache=static, choose_kernels=False)
    assert engine.walk is not None
    ours, theirs = _caches(static, model.config.num_hidden_layers, _reads_prefix(model))
    steps = [(PROMPT, 0), (torch.tensor([[11]]), 7), (torch.tensor([[3, 8, 8, 60, 2]]), 8)]
    for tokens, start in steps:  # a prefill, one token, a verification of five positions
        expected = _transformers_logits(model, tokens, start, theirs)
        got = engine.full(tokens, start, ours) if tokens.shape[-1] == 1 else engine.verify(tokens, start, ours)
        assert torch.equal(got, expected), f"{arch}: positions {start}..{start + tokens.shape[-1] - 1}"
    ours, theirs = _caches(static, model.config.num_hidden_layers, _reads_prefix(model))
    last = engine.full(PROMPT, 0, ours, last_only=True)  # a prefill that needs only the next token's logits
    assert torch.equal(last, _transformers_logits(model, PROMPT, 0, theirs, last_only=True))


@pytest.mark.parametrize("form", ["repeated", "grouped"])
def test_either_masked_queries_form_gives_transformers_logits_bit_for_bit(form, monkeypatch):
    # Whichever form this machine's timing picks, a verification over a static cache (masked queries over
    # grouped keys and values: the tiny llama has 4 query heads and 2 key/value heads) must not change.
    chosen = []
    monkeypatch.setattr(architectures, "masked_queries_form", lambda *args, **kwargs: chosen.append(form) or form)
    model = tiny_model("llama")
    engine = Engine(model, choose_kernels=False)
    ours, theirs = _caches(True, model.config.num_hidden_layers, _reads_prefix(model))
    for tokens, start in [(PROMPT, 0), (torch.tensor([[3, 8, 8, 60, 2]]), 7)]:
        expected = _transformers_logits(model, tokens, start, theirs)
        assert torch.equal(engine.verify(tokens, start, ours), expected)
    assert chosen == [form]


def test_forms_are_not_timed_where_there_is_nothing_to_choose():
    attention = tiny_model("llama").model.layers[0].self_attn
    assert attention_forms.masked_queries_form(attention, None, torch.float32, torch.device("meta")) == "repeated"
    assert attention_forms.one_query_form(attention, torch.float32, torch.device("meta")) == "grouped"
    attention.config.num_key_value_heads = attention.config.num_attention_heads  # no groups
    assert attention_forms.masked_queries_form(attention, None, torch.float32, torch.device("cpu")) == "repeated"
    assert attention_forms.one_query_form(attention, torch.float32, torch.device("cpu")) == "grouped"


def test_packed_one_query_form_gives_transformers_logits_to_rounding(monkeypatch):
    # "packed" sums the same products as transformers' one-query path in another kernel: float32 ulps apart.
    monkeypatch.setattr(architectures, "one_query_form", lambda *args, **kwargs: "packed")
    monkeypatch.setenv("SELFSPEC_NATIVE", "0")  # the Python loop's calls are counted (test_native_layers.py: the C++ one's)
    packed_calls = []
    attend = attention_forms.attend
    monkeypatch.setattr(attention_forms, "attend", lambda *a, packed: packed_calls.append(packed) or attend(*a, packed=packed))
    model = tiny_model("llama")
    engine = Engine(model, choose_kernels=False)
    engine.forward = LayerWalk(engine.tuned, model.config, engine.tuned.get_output_embeddings(), choose_forms=True)
    ours, theirs = _caches(True, model.config.num_hidden_layers, _reads_prefix(model))
    for tokens, start in [(PROMPT, 0), (torch.tensor([[11]]), 7), (torch.tensor([[12]]), 8)]:
        got = engine.full(tokens, start, ours)
        torch.testing.assert_close(got, _transformers_logits(model, tokens, start, theirs), rtol=1e-5, atol=1e-5)
    assert packed_calls == [True] * (2 * model.config.num_hidden_layers)  # the two one-token steps, packed


def test_one_query_is_attended_directly_and_gives_transformers_logits_bit_for_bit(monkeypatch):
    # On a CPU the walk makes transformers' own one-query sdpa call ("grouped") itself, skipping its checks.
    calls = []
    attend = attention_forms.attend
    monkeypatch.setattr(attention_forms, "attend", lambda *a, packed: calls.append(packed) or attend(*a, packed=packed))
    model = tiny_model("llama")
    engine = Engine(model, choose_kernels=False)
    ours, theirs = _caches(True, model.config.num_hidden_layers, _reads_prefix(model))
    for tokens, start in [(PROMPT, 0), (torch.tensor([[11]]), 7), (torch.tensor([[12]]), 8)]:
        assert torch.equal(engine.full(tokens, start, ours), _transformers_logits(model, tokens, start, theirs))
    assert calls == [False] * (2 * model.config.num_hidden_layers)  # the two one-token steps, not packed


def test_a_static_cache_is_read_only_up_to_the_last_position_while_walking():
    model = tiny_model("llama")
    engine = Engine(model, choose_kernels=False)
    cache = new_cache(model.config.num_hidden_layers, 64)
    seen = []
    update = type(cache).update
    def recording(self, *args, **kwargs):
        keys, values = update(self, *args, **kwargs)
        seen.append((keys.shape[-2], values.shape[-2]))
        return keys, values
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(cache), "update", recording)
        engine.full(PROMPT, 0, cache)
        engine.verify(torch.tensor([[3, 8, 8]]), 7, cache)
    layers = model.config.num_hidden_layers
    assert seen == [(7, 7)] * layers + [(10, 10)] * layers
    assert cache.attended is None  # the whole buffer again once the forward is done
    assert cache.layer_length(0) == 10


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_sublayers_run_directly_only_for_plain_llama_layers(arch):
    assert (direct_sublayers(tiny_model(arch)) is not None) == (arch in PLAIN_LLAMA_MODEL_TYPES)


@pytest.mark.parametrize("hooked", ["", "self_attn", "mlp.up_proj", "post_attention_layernorm"])
def test_a_hooked_module_keeps_its_own_call(hooked):
    """Hooks (accelerate's device maps add some) run only when the module itself is called: the decoder layer
    itself, or any module in it."""
    model = tiny_model("llama")
    calls = []
    model.model.layers[2].get_submodule(hooked).register_forward_hook(lambda module, args, out: calls.append(1))
    assert direct_sublayers(model) is None
    engine = Engine(model, choose_kernels=False)
    engine.full(PROMPT, 0, engine.new_cache(PROMPT.shape[-1], 4))
    assert calls == [1]


def test_a_hooked_model_runs_and_compiles_through_transformers_forward():
    from selfspec import autoregressive

    model = tiny_model("llama")
    calls = []
    model.model.layers[1].register_forward_hook(lambda module, args, out: calls.append(1))
    prompt = [5, 9, 2, 41, 7, 7, 30]
    expected = model.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False)[0, len(prompt):].tolist()
    calls.clear()
    engine = Engine(model, compile=True, choose_kernels=False, compile_backend="eager")
    assert engine.walk is None and engine.steps is not None
    assert [t for r in autoregressive(model, prompt, 6, engine=engine) for t in r.token_ids] == expected
    assert engine.compilations > 0 and len(calls) >= 6  # compiled steps ran, through the hooked layer


def test_reports_name_the_forms_chosen(monkeypatch):
    monkeypatch.setattr(architectures, "one_query_form", lambda *args, **kwargs: "packed")
    monkeypatch.setattr(architectures, "masked_queries_form", lambda *args, **kwargs: "grouped")
    monkeypatch.setattr(architectures, "norm_form", lambda *args: "by length")
    model = tiny_model("llama")
    assert Engine(model).describe()["forms"] == {"masked queries": "grouped", "one query": "packed",
                                                 "norms": "by length"}
    # An engine that keeps transformers' kernels keeps its one-query path and its norms; models not walked
    # directly report none.
    kept = Engine(model, choose_kernels=False).describe()["forms"]
    assert kept["one query"] == "grouped" and kept["norms"] == "transformers"
    assert Engine(tiny_model("gemma2")).describe()["forms"] == {}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("arch", sorted(PLAIN_LLAMA_MODEL_TYPES))
def test_a_norm_by_length_is_transformers_norm_to_rounding(arch, dtype):
    norm = tiny_model(arch).model.layers[0].input_layernorm.to(dtype)
    assert rms_norms.is_rms_norm(norm)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(-2.0, 3.0, norm.weight.shape[0]))  # not the initial ones
    torch.manual_seed(0)
    hidden = torch.randn(64, 3, norm.weight.shape[0], dtype=dtype) * 7
    hidden[0, 1] = 0  # a zero vector stays zero (the epsilon is inside the length)
    got = rms_norms.by_length(norm)(hidden)
    assert got.dtype == dtype and torch.equal(got[0, 1], torch.zeros_like(got[0, 1]))
    x, w = hidden.double(), norm.weight.double()
    exact = w * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    nonzero = exact != 0
    error = (got.double() - exact).abs()[nonzero] / exact.abs()[nonzero]
    eps = torch.finfo(dtype).eps
    # float32: a few ulps, like transformers' own; other dtypes: one rounding of a float32 value (transformers
    # rounds twice: the normed value, then its product with the weight).
    assert error.max() <= (4 * eps if dtype == torch.float32 else eps / 2 + 1e-6)
    torch.testing.assert_close(got, norm(hidden), rtol=(8 if dtype == torch.float32 else 2) * eps, atol=0)


def test_norms_are_not_timed_off_the_cpu_nor_for_other_norms():
    model = tiny_model("llama")
    assert rms_norms.norm_form(model.model.layers[0].input_layernorm.to("meta")) == "transformers"
    layer_norm = torch.nn.LayerNorm(8)
    assert not rms_norms.is_rms_norm(layer_norm) and rms_norms.norm_form(layer_norm) == "transformers"
    gemma_norm = tiny_model("gemma2").model.layers[0].input_layernorm  # weight offset by one: another formula
    assert not rms_norms.is_rms_norm(gemma_norm)


def test_the_norm_by_length_form_gives_transformers_logits_to_rounding(monkeypatch):
    monkeypatch.setattr(architectures, "norm_form", lambda *args: "by length")
    monkeypatch.setenv("SELFSPEC_NATIVE", "0")  # the Python loop's calls are counted (test_native_layers.py: the C++ one's)
    calls = []
    normed = rms_norms.rms_normed
    monkeypatch.setattr(rms_norms, "rms_normed", lambda *a: calls.append(1) or normed(*a))
    model = tiny_model("llama")
    engine = Engine(model, choose_kernels=False)
    engine.forward = LayerWalk(engine.tuned, model.config, engine.tuned.get_output_embeddings(), choose_forms=True)
    ours, theirs = _caches(True, model.config.num_hidden_layers, _reads_prefix(model))
    for tokens, start in [(PROMPT, 0), (torch.tensor([[11]]), 7), (torch.tensor([[3, 8, 8, 60, 2]]), 8)]:
        got = engine.full(tokens, start, ours) if tokens.shape[-1] == 1 else engine.verify(tokens, start, ours)
        torch.testing.assert_close(got, _transformers_logits(model, tokens, start, theirs), rtol=1e-5, atol=1e-5)
    assert len(calls) == 3 * 2 * model.config.num_hidden_layers  # two norms a layer, in each of the 3 forwards


def test_the_engine_says_whether_its_verifications_are_the_steps_bit_for_bit(monkeypatch):
    assert Engine(tiny_model("llama")).exact_verifications() is None  # float32: not checked
    monkeypatch.setattr(architectures, "rows_attention", lambda *args: None)  # no C++ extension: sdpa's forms
    engine = Engine(tiny_model("llama").to(torch.bfloat16))
    assert engine.describe()["forms"]["one query"] != "rows"
    assert engine.exact_verifications() is False and engine.describe()["exact_verifications"] is False
