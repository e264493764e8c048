"""The low-bit draft's sublayers in few tensor operations: fused projections, one rotary, fused norms.

A draft token is cheap only if its step is: at batch 1 on a CPU each tensor operation costs several
microseconds of dispatch whatever its size, and a transformers decoder layer runs dozens of them. The
low-bit draft's weights are copies anyway (lowbit.py), so they can be laid out for speed at no cost:
q/k/v become one product and gate/up another (each row of a fused matrix is quantised exactly as it
was alone), the rotary embedding is applied to queries and keys together, each RMS norm is four
operations instead of eight (x * w / sqrt(mean(x^2) + eps) = x / hypot(||x||, sqrt(d eps)) * w sqrt(d)),
and products stay in the kernel's dtype where the next operation casts anyway. The draft only
proposes — the full model verifies with its own modules — so the few-ulp differences of another
operation order cannot change the output.

Only plain Llama-family layers are fused (architectures.plain_llama_layers); others keep transformers'
modules.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from selfspec.engine.architectures import rotated
from selfspec.engine.attention_forms import attend

def _concatenated(*linears: nn.Linear) -> nn.Linear:
    """One nn.Linear whose rows are the given layers' rows, in order (a temporary to quantise)."""
    first = linears[0]
    fused = nn.Linear(first.in_features, sum(lin.out_features for lin in linears), bias=first.bias is not None,
                      device="meta")
    fused.weight = nn.Parameter(torch.cat([lin.weight.detach() for lin in linears]), requires_grad=False)
    if first.bias is not None:
        fused.bias = nn.Parameter(torch.cat([lin.bias.detach() for lin in linears]), requires_grad=False)
    return fused


def fuse_projections(layer: nn.Module, quantise: Callable[[nn.Linear], nn.Module],
                     query_form: str = "grouped") -> None:
    """Give a shadow layer `self_attn.qkv_proj` and `mlp.gate_up_proj` (quantised), dropping the parts,
    its norms the constants of `_rms_normed`, and its attention a one-query form (attention_forms.py)."""
    attn, mlp = layer.self_attn, layer.mlp
    attn.packs_one_query = query_form == "packed"
    for norm in (layer.input_layernorm, layer.post_attention_layernorm):
        width = norm.weight.shape[-1]
        norm.scaled_weight = norm.weight.detach() * width ** 0.5
        norm.epsilon_norm = torch.tensor((width * norm.variance_epsilon) ** 0.5, dtype=torch.float32,
                                         device=norm.weight.device)
    attn.qkv_proj = quantise(_concatenated(attn.q_proj, attn.k_proj, attn.v_proj))
    mlp.gate_up_proj = quantise(_concatenated(mlp.gate_proj, mlp.up_proj))
    # Where the fused output splits, worked out once rather than every step.
    attn.query_width = attn.q_proj.out_features
    attn.query_key_width = attn.q_proj.out_features + attn.k_proj.out_features
    attn.query_heads = attn.q_proj.out_features // attn.head_dim
    for module, names in ((attn, ("q_proj", "k_proj", "v_proj")), (mlp, ("gate_proj", "up_proj"))):
        for name in names:
            delattr(module, name)


def fused_attention_sublayer(layer: nn.Module, hidden: torch.Tensor, position_embeddings, attention_mask,
                             position_ids: torch.Tensor, cache) -> torch.Tensor:
    """hidden + Attention(norm(hidden)) for a layer `fuse_projections` prepared (same call as
    architectures.attention_sublayer)."""
    attn = layer.self_attn
    width = hidden.shape[1]
    head_dim = attn.head_dim
    qkv = attn.qkv_proj.native(_rms_normed(hidden, layer.input_layernorm)).to(hidden.dtype)  # the cache's dtype
    query_keys = qkv[..., :attn.query_key_width].view(1, width, -1, head_dim).transpose(1, 2)
    values = qkv[..., attn.query_key_width:].view(1, width, -1, head_dim).transpose(1, 2)
    query_keys = rotated(query_keys, *position_embeddings)  # as `rolled_rotary` prepares them
    heads = attn.query_heads
    keys, values = cache.update(query_keys[:, heads:], values, attn.layer_idx)
    out = attend(query_keys[:, :heads], keys, values, attention_mask, attn.scaling,
                  packed=width == 1 and attn.packs_one_query)
    return _residual(hidden, attn.o_proj.native(out.transpose(1, 2).reshape(1, width, attn.query_width)))


def fused_mlp_sublayer(layer: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """hidden + MLP(norm(hidden)) for a layer `fuse_projections` prepared."""
    mlp = layer.mlp
    gate, up = mlp.gate_up_proj.native(_rms_normed(hidden, layer.post_attention_layernorm)).chunk(2, -1)
    return _residual(hidden, mlp.down_proj.native(F.silu(gate) * up))


def _residual(hidden: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """hidden + out in hidden's dtype. A product left in its kernel's dtype (bfloat16) joins a float32 or
    bfloat16 stream as it is, the cast done by the addition; but float16 + bfloat16 promotes to float32,
    which would leave a float16 model's stream, and its cache's dtype, after the first sublayer."""
    if out.dtype is not hidden.dtype and hidden.dtype is not torch.float32:
        out = out.to(hidden.dtype)
    return hidden + out


def _rms_normed(hidden: torch.Tensor, norm: nn.Module) -> torch.Tensor:
    """RMSNorm in four operations (on CPU torch's `rms_norm` runs eight): sqrt(||x||^2 + d eps) is
    sqrt(d) times the root mean square with its epsilon, so a zero vector stays zero."""
    length = torch.hypot(torch.linalg.vector_norm(hidden, dim=-1, keepdim=True), norm.epsilon_norm)
    return hidden / length * norm.scaled_weight
