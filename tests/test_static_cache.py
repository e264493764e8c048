"""The static cache: positions index it, rollback moves a length, stale entries never leak into attention."""

from __future__ import annotations

import random

import pytest
import torch

from selfspec import DraftModel, DraftSettings, SkipProfile, autoregressive, self_speculative
from selfspec.engine.cache import new_cache, truncate
from selfspec.engine.runtime import Engine, forward_full
from tiny_models import tiny_model


def generated(records) -> list[int]:
    return [t for r in records for t in r.token_ids]


@pytest.fixture(autouse=True)
def _kernel_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("SELFSPEC_CACHE", str(tmp_path))


@torch.inference_mode()
def _poison(cache, length: int) -> None:
    """Fill every layer's buffer past `length` with large random values, as a stale draft could leave it."""
    for layer in cache.layers:
        layer.keys[..., length:, :] = torch.randn_like(layer.keys[..., length:, :]) * 50
        layer.values[..., length:, :] = torch.randn_like(layer.values[..., length:, :]) * 50


@pytest.mark.parametrize("arch,overrides", [("llama", {}), ("gemma2", {"sliding_window": 4}),
                                            ("qwen3", {}), ("phi3", {})])
@torch.inference_mode()
def test_full_and_draft_logits_equal_the_dynamic_caches_whatever_lies_past_the_length(arch, overrides):
    model = tiny_model(arch, **overrides)
    prompt = torch.tensor([[5, 9, 17, 33, 2, 8, 41, 60, 7, 3]])
    draft = DraftModel(model, SkipProfile(4, attn=[1, 3], mlp=[2]))
    static, dynamic = new_cache(4, 32), new_cache()
    for cache in (static, dynamic):
        forward_full(model, prompt, 0, cache)
    _poison(static, 10)
    block = torch.tensor([[11, 12, 13]])
    torch.testing.assert_close(forward_full(model, block, 10, static), forward_full(model, block, 10, dynamic))
    for cache in (static, dynamic):
        truncate(cache, 11)  # keep one of the three
    _poison(static, 11)
    for i, token in enumerate([40, 41, 42]):  # drafting: skipped layers stay behind, masks come from positions
        position = torch.tensor([[11 + i]])
        ids = torch.tensor([[token]])
        torch.testing.assert_close(draft(ids, position, static), draft(ids, position, dynamic))


@torch.inference_mode()
def test_rollback_moves_lengths_in_place_and_keeps_the_buffers():
    model = tiny_model("llama")
    cache = new_cache(4, 20)
    forward_full(model, torch.tensor([[3, 4, 5, 6]]), 0, cache)
    buffers = [(layer.keys.data_ptr(), layer.values.data_ptr()) for layer in cache.layers]
    lengths = [layer.cumulative_length for layer in cache.layers]
    draft = DraftModel(model, SkipProfile(4, attn=[2]))
    draft(torch.tensor([[7]]), torch.tensor([[4]]), cache)
    assert [cache.layer_length(i) for i in range(4)] == [5, 5, 4, 5]  # the skipped layer wrote nothing
    truncate(cache, 4)
    assert [cache.layer_length(i) for i in range(4)] == [4, 4, 4, 4]
    assert [(layer.keys.data_ptr(), layer.values.data_ptr()) for layer in cache.layers] == buffers
    assert all(a is b.cumulative_length for a, b in zip(lengths, cache.layers))


def test_a_cache_needs_a_positive_capacity():
    with pytest.raises(ValueError, match="at least one position"):
        new_cache(4, 0)


@pytest.mark.parametrize("static", [True, False], ids=["static", "dynamic"])
def test_both_caches_give_the_full_models_tokens(static):
    model = tiny_model("mistral", sliding_window=6)
    engine = Engine(model, static_cache=static)
    assert engine.static_cache is static and engine.describe()["cache"] == ("static" if static else "dynamic")
    rng = random.Random(5)
    prompt = [rng.randrange(2, 96) for _ in range(9)]
    expected = model.generate(torch.tensor([prompt]), max_new_tokens=24, do_sample=False)[0, 9:].tolist()
    assert generated(autoregressive(model, prompt, 24, engine=engine)) == expected
    for profile in (SkipProfile(4, attn=[0, 2], mlp=[1]), SkipProfile(4, attn=[1, 2, 3])):
        got = self_speculative(model, prompt, profile, 24, settings=DraftSettings(max_draft=5, exit="off"),
                               engine=engine)
        assert generated(got) == expected


def test_an_engine_serves_only_its_own_model():
    engine = Engine(tiny_model("llama", seed=1), choose_kernels=False)
    with pytest.raises(ValueError, match="different model"):
        list(autoregressive(tiny_model("llama", seed=2), [3, 4], 2, engine=engine))


def test_flash_style_attention_falls_back_to_the_dynamic_cache():
    model = tiny_model("llama")
    model.config._attn_implementation = "flash_attention_2"  # takes no position-built masks
    assert not Engine(model, choose_kernels=False).static_cache


def _reference(model, prompt: list[int], max_new_tokens: int) -> list[int]:
    out = model.generate(torch.tensor([prompt]), max_new_tokens=max_new_tokens, do_sample=False)
    return out[0, len(prompt):].tolist()


def test_a_finished_requests_cache_is_reused_and_concurrent_ones_get_their_own():
    engine = Engine(tiny_model("llama"), choose_kernels=False)
    with engine.request_cache(10, 6, 3) as first:
        with engine.request_cache(10, 6, 3) as concurrent:
            assert concurrent is not first
    with engine.request_cache(10, 6, 3) as later:
        assert later is first or later is concurrent  # a finished one, not a new one
    with engine.request_cache(10, 7, 3) as other_size:
        assert other_size is not first and other_size is not concurrent


def test_requests_through_reused_and_interleaved_caches_decode_exactly():
    # Stale entries of an earlier, longer request lie in a reused cache; two requests interleave step by
    # step on one engine. Every output must still be the model's own greedy continuation.
    model = tiny_model("llama")
    model.generation_config.eos_token_id = None
    engine = Engine(model, choose_kernels=False)
    draft = DraftModel(model, SkipProfile(4, attn=[1, 3], mlp=[2]))
    rng = random.Random(5)
    prompts = [[rng.randrange(1, 64) for _ in range(12)] for _ in range(3)]
    settings = DraftSettings(max_draft=3, context_tokens=0)
    for prompt in prompts:  # sequential: each reuses the cache the one before left behind
        assert generated(autoregressive(model, prompt, 8, engine=engine)) == _reference(model, prompt, 8)
        assert generated(self_speculative(model, prompt, draft, 8, settings=settings, engine=engine)) == \
            _reference(model, prompt, 8)
    a = autoregressive(model, prompts[0], 8, engine=engine)
    b = self_speculative(model, prompts[1], draft, 8, settings=settings, engine=engine)
    outputs = {0: [], 1: []}
    for pair in zip(a, b):
        for i, record in enumerate(pair):
            outputs[i].extend(record.token_ids)
    outputs[0].extend(generated(a))
    outputs[1].extend(generated(b))
    assert outputs[0] == _reference(model, prompts[0], 8) and outputs[1] == _reference(model, prompts[1], 8)


def test_finished_caches_kept_are_few_whatever_the_request_sizes():
    engine = Engine(tiny_model("llama"), choose_kernels=False)
    seen = []
    for new_tokens in range(1, 12):  # eleven sizes, one after the other
        with engine.request_cache(10, new_tokens) as cache:
            seen.append(cache)
    with engine.request_cache(10, 1) as oldest_size:  # long since dropped: a new one
        assert all(oldest_size is not c for c in seen)
    with engine.request_cache(10, 11) as newest_size:  # still kept
        assert newest_size is seen[-1]


def test_a_forward_that_fails_leaves_the_cache_reading_its_whole_buffer():
    # The walk has the cache return only its filled prefix during one forward; a forward that raises part way
    # must not leave that setting behind for the next caller (a compiled step, transformers' own forward).
    model = tiny_model("llama")
    engine = Engine(model, choose_kernels=False)
    cache = new_cache(model.config.num_hidden_layers, 32)
    engine.full(torch.tensor([[3, 4, 5]]), 0, cache)
    def failing_mlp(layer, hidden):
        assert cache.attended == 4  # reading the prefix when it fails
        raise RuntimeError("out of memory")
    engine.walk._mlp = failing_mlp
    with pytest.raises(RuntimeError, match="out of memory"):
        engine.full(torch.tensor([[6]]), 3, cache)
    assert cache.attended is None
    block = torch.zeros_like(cache.layers[0].keys[:, :, :1])
    with torch.inference_mode():
        keys, values = cache.update(block, block, 0)
    assert keys.shape[-2] == values.shape[-2] == 32
