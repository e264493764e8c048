"""Tiny randomly initialised models of every supported architecture (no download)."""

from __future__ import annotations

import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    Gemma3TextConfig,
    LlamaConfig,
    MistralConfig,
    Phi3Config,
    Qwen2Config,
    Qwen3Config,
)

COMMON = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
              bos_token_id=0, eos_token_id=1, pad_token_id=0)

CONFIGS = {
    "llama": lambda: LlamaConfig(**COMMON),
    "mistral": lambda: MistralConfig(**COMMON, sliding_window=None),
    "qwen2": lambda: Qwen2Config(**COMMON),
    "qwen3": lambda: Qwen3Config(**COMMON, head_dim=8),
    "gemma2": lambda: Gemma2Config(**COMMON, head_dim=8, sliding_window=128),
    "gemma3_text": lambda: Gemma3TextConfig(**COMMON, head_dim=8, sliding_window=128),
    "phi3": lambda: Phi3Config(**COMMON),
}


def tiny_model(model_type: str = "llama", seed: int = 0, **overrides) -> torch.nn.Module:
    config = CONFIGS[model_type]()
    for key, value in overrides.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # Random init gives near-uniform logits; sharpen them so greedy choices are not ties.
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(8.0)
    return model.eval()
