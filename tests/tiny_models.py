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


def byte_tokenizer():
    """A byte-level tokenizer (one token per UTF-8 byte, no merges): ids 0/1 are <s>/</s>, vocabulary 258."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<s>": 0, "</s>": 1, **{ch: i + 2 for i, ch in enumerate(alphabet)}}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<s>")


def save_tiny(path, model_type: str = "llama", seed: int = 0, **overrides):
    """A tiny model with a byte-level tokenizer saved with `save_pretrained`: loadable by name like a real one."""
    tokenizer = byte_tokenizer()
    model = tiny_model(model_type, seed, vocab_size=len(tokenizer), **overrides)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
