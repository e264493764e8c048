"""Which model families the engine understands, and how their decoder layers are built.

Skipping a sublayer means bypassing it while the residual stream passes through unchanged. Where
the residual additions sit differs between families, so this module names the two layer shapes we
support and gives one function per sublayer that applies it *with* its residual addition.
"""

from __future__ import annotations

import torch
from torch import nn

# model_type -> family name shown to users
SUPPORTED_MODEL_TYPES: dict[str, str] = {
    "llama": "Llama",
    "mistral": "Mistral",
    "qwen2": "Qwen2",
    "qwen3": "Qwen3",
    "gemma2": "Gemma2",
    "gemma3_text": "Gemma3 (text)",
    "phi3": "Phi-3",
}


class UnsupportedModelError(ValueError):
    """The model's architecture is not one the draft knows how to skip sublayers of."""


def check_supported(model: nn.Module) -> None:
    model_type = getattr(model.config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        names = ", ".join(SUPPORTED_MODEL_TYPES.values())
        raise UnsupportedModelError(
            f"architecture {model_type!r} ({type(model).__name__}) is not supported; supported: {names}"
        )


def decoder(model: nn.Module) -> nn.Module:
    """The causal LM's inner decoder (embeddings, layers, final norm, rotary embedding)."""
    return model.model


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    return decoder(model).layers


def num_layers(model: nn.Module) -> int:
    return int(model.config.num_hidden_layers)


def attention_window(config, layer_index: int) -> int | None:
    """Sliding-window size of one layer's attention, or None for full attention."""
    layer_types = getattr(config, "layer_types", None)
    window = getattr(config, "sliding_window", None)
    if layer_types is not None:
        return window if layer_types[layer_index] == "sliding_attention" else None
    return window


def layer_type(config, layer_index: int) -> str:
    layer_types = getattr(config, "layer_types", None)
    return layer_types[layer_index] if layer_types is not None else "full_attention"


def _has_sandwich_norms(layer: nn.Module) -> bool:
    # Gemma 2/3 normalise both the input and the output of each sublayer.
    return hasattr(layer, "pre_feedforward_layernorm")


def attention_sublayer(
    layer: nn.Module,
    hidden: torch.Tensor,
    position_embeddings,
    attention_mask: torch.Tensor | None,
    position_ids: torch.Tensor,
    cache,
) -> torch.Tensor:
    """hidden + Attention(norm(hidden)), in the same operation order as the layer's own forward."""
    out, _ = layer.self_attn(
        hidden_states=layer.input_layernorm(hidden),
        position_embeddings=position_embeddings,
        attention_mask=attention_mask,
        position_ids=position_ids,
        cache=cache,
        use_cache=True,
    )
    if _has_sandwich_norms(layer):
        out = layer.post_attention_layernorm(out)
    return hidden + out


def mlp_sublayer(layer: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """hidden + MLP(norm(hidden)), in the same operation order as the layer's own forward."""
    if _has_sandwich_norms(layer):
        return hidden + layer.post_feedforward_layernorm(layer.mlp(layer.pre_feedforward_layernorm(hidden)))
    return hidden + layer.mlp(layer.post_attention_layernorm(hidden))
