"""The engine's full-model forwards walk the layers themselves: their logits must be transformers' own, bit for bit."""

from __future__ import annotations

import pytest
import torch

from selfspec.engine import architectures
from selfspec.engine.architectures import PLAIN_LLAMA_MODEL_TYPES, direct_sublayers
from selfspec.engine.cache import new_cache
from selfspec.engine.runtime import Engine
from tiny_models import CONFIGS, tiny_model

PROMPT = torch.tensor([[5, 9, 2, 41, 7, 7, 30]])


def _transformers_logits(model, tokens, start, cache, last_only=False):
    positions = torch.arange(start, start + tokens.shape[-1])[None]
    with torch.inference_mode():
        return model(input_ids=tokens, position_ids=positions, cache=cache, use_cache=True,
                     logits_to_keep=1 if last_only else 0).logits[0]


def _caches(static: bool, layers: int):
    return (new_cache(layers, 64), new_cache(layers, 64)) if static else (new_cache(), new_cache())


@pytest.mark.parametrize("static", [True, False], ids=["static", "dynamic"])
@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_the_walk_gives_transformers_logits_bit_for_bit(arch, static):
    model = tiny_model(arch)
    engine = Engine(model, static_cache=static, choose_kernels=False)
    assert engine.walk is not None
    ours, theirs = _caches(static, model.config.num_hidden_layers)
    steps = [(PROMPT, 0), (torch.tensor([[11]]), 7), (torch.tensor([[3, 8, 8, 60, 2]]), 8)]
    for tokens, start in steps:  # a prefill, one token, a verification of five positions
        expected = _transformers_logits(model, tokens, start, theirs)
        got = engine.full(tokens, start, ours) if tokens.shape[-1] == 1 else engine.verify(tokens, start, ours)
        assert torch.equal(got, expected), f"{arch}: positions {start}..{start + tokens.shape[-1] - 1}"
    ours, theirs = _caches(static, model.config.num_hidden_layers)
    last = engine.full(PROMPT, 0, ours, last_only=True)  # a prefill that needs only the next token's logits
    assert torch.equal(last, _transformers_logits(model, PROMPT, 0, theirs, last_only=True))


@pytest.mark.parametrize("form", ["repeated", "grouped"])
def test_either_masked_queries_form_gives_transformers_logits_bit_for_bit(form, monkeypatch):
    # Whichever form this machine's timing picks, a verification over a static cache (masked queries over
    # grouped keys and values: the tiny llama has 4 query heads and 2 key/value heads) must not change.
    chosen = []
    monkeypatch.setattr(architectures, "masked_queries_form", lambda *args: chosen.append(form) or form)
    model = tiny_model("llama")
    engine = Engine(model, choose_kernels=False)
    ours, theirs = _caches(True, model.config.num_hidden_layers)
    for tokens, start in [(PROMPT, 0), (torch.tensor([[3, 8, 8, 60, 2]]), 7)]:
        expected = _transformers_logits(model, tokens, start, theirs)
        assert torch.equal(engine.verify(tokens, start, ours), expected)
    assert chosen == [form]


def test_masked_queries_form_is_not_timed_where_there_is_nothing_to_choose():
    attention = tiny_model("llama").model.layers[0].self_attn
    assert architectures.masked_queries_form(attention, None, torch.float32, torch.device("meta")) == "repeated"
    attention.config.num_key_value_heads = attention.config.num_attention_heads  # no groups
    assert architectures.masked_queries_form(attention, None, torch.float32, torch.device("cpu")) == "repeated"


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
