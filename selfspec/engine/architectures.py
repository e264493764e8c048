"""Which model families the engine understands, and how their decoder layers are built.

Skipping a sublayer means bypassing it while the residual stream passes through unchanged. Where
the residual additions sit differs between families, so this module names the two layer shapes we
support and gives one function per sublayer that applies it *with* its residual addition.
"""

from __future__ import annotations

import sys
from typing import Callable

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from selfspec.engine.attention_forms import (ROWS_FORM, exact_rows_required, masked_queries_form, one_query_form,
                                             rows_attention, with_forms)
from selfspec.engine.rms_norms import by_length, norm_form

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


PLAIN_LLAMA_MODEL_TYPES = ("llama", "mistral", "qwen2")


def plain_llama_layers(model: nn.Module) -> bool:
    """Whether every decoder layer of `model` has the plain Llama shape: pre-norm RMSNorm, SiLU-gated MLP,
    full rotary, no q/k norms, sdpa or eager attention (the families in PLAIN_LLAMA_MODEL_TYPES)."""
    config = model.config
    attention = getattr(config, "_attn_implementation", "sdpa") or "sdpa"
    return (getattr(config, "model_type", None) in PLAIN_LLAMA_MODEL_TYPES
            and getattr(config, "hidden_act", None) == "silu"
            and getattr(config, "pretraining_tp", 1) == 1
            and attention in ("sdpa", "eager")
            and all(_plain_layer(layer) for layer in decoder_layers(model)))


def _plain_layer(layer: nn.Module) -> bool:
    attn, mlp = layer.self_attn, layer.mlp
    projections = [getattr(attn, "o_proj", None), getattr(mlp, "down_proj", None)]
    for owner, joined, parts in PROJECTION_GROUPS:  # each group's parts, or their join
        module = getattr(layer, owner)
        projections += [getattr(module, joined)] if hasattr(module, joined) else [getattr(module, n, None) for n in parts]
    norms = (getattr(layer, "input_layernorm", None), getattr(layer, "post_attention_layernorm", None))
    return (all(isinstance(p, nn.Module) and hasattr(p, "in_features") for p in projections)
            and not hasattr(attn, "q_norm")
            and all(n is not None and hasattr(n, "variance_epsilon") for n in norms))


def walkable_plain_layers(model: nn.Module) -> bool:
    """Plain Llama-family layers (`plain_llama_layers`) whose modules carry no hooks (accelerate's device
    maps add some): the layers `direct_sublayers` runs, and the only ones whose projections may be joined."""
    return plain_llama_layers(model) and not any(hooked(m) for layer in decoder_layers(model) for m in layer.modules())


# Projections of a plain layer that read the same input: (the layer's submodule, the joined projection's
# name, its parts in order). The low-bit draft quantises each group as one product (fused_sublayers.py),
# and the engine may run each as one product over a packed copy (row_products.py).
PROJECTION_GROUPS = (("self_attn", "qkv_proj", ("q_proj", "k_proj", "v_proj")),
                     ("mlp", "gate_up_proj", ("gate_proj", "up_proj")))


def stacked_linear(linears: list[nn.Module]) -> nn.Linear:
    """One nn.Linear whose rows are the given layers' rows, in order (a temporary to quantise or pack):
    each of its outputs is the product of the same weight row with the same input as before."""
    first = linears[0]
    stacked = nn.Linear(first.in_features, sum(lin.out_features for lin in linears), bias=first.bias is not None,
                        device="meta")
    stacked.weight = nn.Parameter(torch.cat([lin.weight.detach() for lin in linears]), requires_grad=False)
    if first.bias is not None:
        stacked.bias = nn.Parameter(torch.cat([lin.bias.detach() for lin in linears]), requires_grad=False)
    return stacked


def join_projections(layer: nn.Module, join: Callable[[list[nn.Module]], nn.Module],
                     groups: tuple[str, ...] | None = None) -> None:
    """Replace each projection group (PROJECTION_GROUPS; `groups`: only these joined names) of a shadow's
    plain layer by `join(parts)`, as the group's joined name, dropping the parts."""
    for owner, joined, parts in PROJECTION_GROUPS:
        if groups is None or joined in groups:
            module = getattr(layer, owner)
            setattr(module, joined, join([getattr(module, name) for name in parts]))
            for name in parts:
                delattr(module, name)


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


def direct_sublayers(model: nn.Module, choose_forms: bool = True) -> tuple[Callable, Callable] | None:
    """For plain Llama-family layers whose modules carry no hooks (accelerate's device maps add some; they
    are looked for now, once): (attention, MLP) sublayer functions like `attention_sublayer` and
    `mlp_sublayer` that run each module's own operations in its own order (transformers'
    `LlamaAttention.forward`, its family's attention function, its rotary in the equal form of `rotated`,
    each linear's and norm's own `forward`) without the calls' keyword plumbing, which at batch 1 on a CPU
    costs more than a small layer's arithmetic. The logits stay the model's own, bit for bit, unless `choose_forms` lets this
    machine's timing choose an attention or norm form that differs from transformers' by a few ulps
    (attention_forms.py, rms_norms.py; the attention function's `forms` says which). None for any other model."""
    layers = decoder_layers(model)
    if not walkable_plain_layers(model):
        return None
    family = sys.modules[type(layers[0].self_attn).__module__]
    implementation = model.config._attn_implementation or "sdpa"
    attend = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, family.eager_attention_forward)
    weight = layers[0].self_attn.o_proj.weight
    forms = {}
    if implementation == "sdpa":
        attn = layers[0].self_attn
        windowless = all(attention_window(model.config, i) is None for i in range(len(layers)))
        rows = rows_attention(attn, weight.device, windowless) if choose_forms else None
        if rows is not None and exact_rows_required(weight.dtype):
            forms = {"masked queries": ROWS_FORM, "one query": ROWS_FORM}
        else:
            forms = {"masked queries": masked_queries_form(attn, attend, weight.dtype, weight.device, rows=rows),
                     "one query": (one_query_form(attn, weight.dtype, weight.device, rows=rows) if choose_forms
                                   else "grouped")}
        attend = with_forms(attend, forms["masked queries"], forms["one query"],
                            direct_one_query=weight.device.type == "cpu", rows=rows)

    norms = norm_form(layers[0].input_layernorm) if choose_forms else "transformers"
    forms["norms"] = norms
    parts = {id(layer): _LayerParts(layer, norms) for layer in layers}  # the walk passes these very layers

    def attention(layer, hidden, position_embeddings, attention_mask, position_ids, cache):
        p = parts[id(layer)]
        normed = p.input_norm(hidden)
        heads = (*hidden.shape[:-1], -1, p.head_dim)
        cos, signed_sin = position_embeddings  # as `rolled_rotary` prepares them
        whole = p.qkv_joined(normed) if p.qkv_joined is not None else None
        if whole is not None:
            # Queries and keys side by side in one product's output: one rotary for both (elementwise, so
            # the same values as rotating each), seven operations a layer fewer.
            query_keys, value = whole.view(heads).transpose(1, 2).split_with_sizes(p.qk_heads, 1)
            query, key = rotated(query_keys, cos, signed_sin).split_with_sizes(p.q_k_heads, 1)
        else:
            query, key, value = (p.q(normed), p.k(normed), p.v(normed)) if p.qkv is None else p.qkv(normed)
            query, key, value = (x.view(heads).transpose(1, 2) for x in (query, key, value))
            query, key = rotated(query, cos, signed_sin), rotated(key, cos, signed_sin)
        key, value = cache.update(key, value, p.layer_index)
        out, _ = attend(p.attention, query, key, value, attention_mask, dropout=0.0, scaling=p.scaling)
        return hidden + p.o(out.reshape(*hidden.shape[:-1], -1).contiguous())

    def mlp(layer, hidden):
        p = parts[id(layer)]
        normed = p.mlp_norm(hidden)
        gate, up = (p.gate(normed), p.up(normed)) if p.gate_up is None else p.gate_up(normed)
        return hidden + p.down(p.act(gate) * up)

    attention.forms = forms  # what the timing chose, for reports
    return attention, mlp


class _LayerParts:
    """A plain Llama-family layer's modules' `forward`s and constants, gathered once: reached through
    nn.Module's attribute lookups (`layer.self_attn.q_proj`) they cost microseconds a layer at every step."""

    __slots__ = ("input_norm", "q", "k", "v", "qkv", "qkv_joined", "qk_heads", "q_k_heads", "o", "attention",
                 "head_dim", "layer_index", "scaling", "mlp_norm", "gate", "up", "gate_up", "down", "act")

    def __init__(self, layer: nn.Module, norms: str = "transformers"):
        attn, mlp = layer.self_attn, layer.mlp
        norm = by_length if norms == "by length" else (lambda module: module.forward)  # rms_norms.NORM_FORMS
        self.input_norm, self.mlp_norm = norm(layer.input_layernorm), norm(layer.post_attention_layernorm)
        (self.q, self.k, self.v), self.qkv = _projections(attn, "qkv_proj", ("q_proj", "k_proj", "v_proj"))
        self.o = attn.o_proj.forward
        self.attention, self.head_dim, self.layer_index, self.scaling = attn, attn.head_dim, attn.layer_idx, attn.scaling
        # A joined q/k/v (narrow_linear.JoinedLinear) hands back its whole output where it runs as one product:
        # split by (query and key heads, value heads), then by (query heads, key heads).
        qkv = getattr(attn, "qkv_proj", None)
        self.qkv_joined = qkv.joined if hasattr(qkv, "joined") else None
        q, k, v = (width // attn.head_dim for width in qkv.widths) if self.qkv_joined else (0, 0, 0)
        self.qk_heads, self.q_k_heads = (q + k, v), (q, k)
        (self.gate, self.up), self.gate_up = _projections(mlp, "gate_up_proj", ("gate_proj", "up_proj"))
        self.down = mlp.down_proj.forward
        self.act = mlp.act_fn.forward if isinstance(mlp.act_fn, nn.Module) else mlp.act_fn


def _projections(module: nn.Module, joined: str, parts: tuple[str, ...]) -> tuple[tuple, Callable | None]:
    """((each part's forward), None) for separate projections; ((None, ...), the joined one's forward, which
    returns the parts' outputs) for joined ones (`join_projections`)."""
    if hasattr(module, joined):
        return (None,) * len(parts), getattr(module, joined).forward
    return tuple(getattr(module, name).forward for name in parts), None


def rolled_rotary(position_embeddings: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """A forward's rotary (cos, sin), each (1, q, d), as `rotated` takes them: (1, 1, q, d) over the heads,
    the sine's first half negated. Made once per forward rather than in every layer."""
    cos, sin = position_embeddings
    half = sin.shape[-1] // 2
    return cos[:, None], torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)[:, None]


def rotated(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """transformers' `x * cos + rotate_half(x) * sin` (half-split rotary) bit for bit, in four operations
    instead of seven: rotate_half(x) * sin = cat(-x2, x1) * cat(s1, s2) = cat(x2, x1) * cat(-s1, s2), and
    cat(x2, x1) is x rolled by half its width (negating a factor rounds nothing)."""
    return x * cos + x.roll(x.shape[-1] // 2, -1) * signed_sin


def hooked(module: nn.Module) -> bool:
    """Whether calling `module` runs more than its forward (hooks: accelerate's device maps add them)."""
    return bool(module._forward_hooks or module._forward_pre_hooks or getattr(module, "_hf_hook", None))
