"""The low-bit draft's sublayers in few tensor operations: fused projections, one rotary, fused norms.

A draft token is cheap only if its step is: at batch 1 on a CPU each tensor operation costs several
microseconds of dispatch whatever its size, and a transformers decoder layer runs dozens of them. The
low-bit draft's weights are copies anyway (lowbit.py), so they can be laid out for speed at no cost:
q/k/v become one product and gate/up another (each row of a fused matrix is quantised exactly as it
was alone), the rotary embedding is applied to queries and keys together, each RMS norm is four
operations instead of eight (rms_norms.py), and products stay in the kernel's dtype where the next
operation casts anyway. The draft only proposes — the full model verifies with its own modules — so the
few-ulp differences of another operation order cannot change the output.

Only plain Llama-family layers are fused (architectures.plain_llama_layers); others keep transformers'
modules.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from selfspec.engine.architectures import join_projections, rotated, stacked_linear
from selfspec.engine.attention_forms import attend
from selfspec.engine.rms_norms import norm_constants, rms_normed


class FusedLayer:
    """What a fused layer's sublayers read at every step, gathered once into plain attributes: reached
    through nn.Module's attribute lookup (`layer.self_attn.qkv_proj`) they cost more per step than
    several of the layer's tensor operations."""

    __slots__ = ("qkv", "o", "gate_up", "down", "input_norm", "mlp_norm", "head_dim", "query_heads",
                 "query_key_heads", "all_heads", "groups", "query_width", "layer_index", "scaling",
                 "packs_one_query")

    def __init__(self, layer: nn.Module, query_form: str):
        attn, mlp = layer.self_attn, layer.mlp
        self.qkv, self.o, self.gate_up, self.down = attn.qkv_proj, attn.o_proj, mlp.gate_up_proj, mlp.down_proj
        self.input_norm = norm_constants(layer.input_layernorm)
        self.mlp_norm = norm_constants(layer.post_attention_layernorm)
        self.head_dim = attn.head_dim
        self.groups = attn.config.num_key_value_heads
        self.query_heads = attn.config.num_attention_heads
        self.query_key_heads = self.query_heads + self.groups
        self.all_heads = self.query_key_heads + self.groups
        self.query_width = self.query_heads * self.head_dim
        self.layer_index, self.scaling = attn.layer_idx, attn.scaling
        self.packs_one_query = query_form == "packed"  # attention_forms.attend packs only grouped heads


def fuse_projections(layer: nn.Module, quantise: Callable[[nn.Linear], nn.Module],
                     query_form: str = "grouped") -> None:
    """Quantise a shadow layer's projections, q/k/v as one product (`self_attn.qkv_proj`) and gate/up as
    another (`mlp.gate_up_proj`), dropping the parts, and give it the `FusedLayer` its sublayers read,
    with a one-query attention form (attention_forms.py)."""
    join_projections(layer, lambda parts: quantise(stacked_linear(parts)))
    attn, mlp = layer.self_attn, layer.mlp
    attn.o_proj, mlp.down_proj = quantise(attn.o_proj), quantise(mlp.down_proj)
    layer.fused = FusedLayer(layer, query_form)


def fused_attention_sublayer(layer: nn.Module, hidden: torch.Tensor, position_embeddings, attention_mask,
                             position_ids: torch.Tensor, cache) -> torch.Tensor:
    """hidden + Attention(norm(hidden)) for a layer `fuse_projections` prepared (same call as
    architectures.attention_sublayer; `hidden` (1, q, d) or its rows (q, d))."""
    fused = layer.fused
    width = hidden.shape[-2]
    qkv = fused.qkv.native(rms_normed(hidden, *fused.input_norm))
    if qkv.dtype is not hidden.dtype:
        qkv = qkv.to(hidden.dtype)  # the cache's dtype
    heads = qkv.view(1, width, fused.all_heads, fused.head_dim).transpose(1, 2)
    query_keys, values = heads.split_with_sizes((fused.query_key_heads, fused.groups), 1)
    rotated_query_keys = rotated(query_keys, *position_embeddings)
    queries, keys = rotated_query_keys.split_with_sizes((fused.query_heads, fused.groups), 1)
    keys, values = cache.update(keys, values, fused.layer_index)  # (rotary as `rolled_rotary` prepares it)
    out = attend(queries, keys, values, attention_mask, fused.scaling, packed=width == 1 and fused.packs_one_query)
    # (1, heads, q, d) -> (1, q, heads * d) or (q, heads * d); for one query that is the same memory.
    rows = (*hidden.shape[:-1], fused.query_width)
    out = out.view(rows) if width == 1 else out.transpose(1, 2).reshape(rows)
    return _residual(hidden, fused.o.native(out))


def fused_mlp_sublayer(layer: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """hidden + MLP(norm(hidden)) for a layer `fuse_projections` prepared."""
    fused = layer.fused
    gate, up = fused.gate_up.native(rms_normed(hidden, *fused.mlp_norm)).chunk(2, -1)
    return _residual(hidden, fused.down.native(F.silu(gate).mul_(up)))


def _residual(hidden: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """hidden + out in hidden's dtype. A product left in its kernel's dtype (bfloat16) joins a float32 or
    bfloat16 stream as it is, the cast done by the addition; but float16 + bfloat16 promotes to float32,
    which would leave a float16 model's stream, and its cache's dtype, after the first sublayer."""
    if out.dtype is not hidden.dtype and hidden.dtype is not torch.float32:
        out = out.to(hidden.dtype)
    return hidden + out
