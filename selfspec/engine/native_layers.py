"""The walk's layer loops in C++ (csrc/layer_loops.cpp), built on first use, cached on disk.

A draft token is some 1200 tensor operations and a full step some 1500, most on a few hundred numbers, and at
batch 1 on a CPU each one called from Python costs its Python call on top of the operation
(docs/BENCHMARKS.md). Two loops make the same ATen calls in the same order as their Python originals, so the
logits are equal bit for bit (tests/test_native_layers.py); only the Python around them is gone:
  - `DraftLayers`: the fused low-bit draft's layers (fused_sublayers.py);
  - `FullLayers`: plain Llama-family layers as the engine runs them (architectures.direct_sublayers), with the
    products row_products.py chose, where the forms taken are ones the loop makes (norms "by length", attention
    as attention_forms.with_forms calls sdpa directly, or in "rows"); a forward whose width needs anything else runs
    in Python.
Both are in the engine's C++ extension (native_build.py); where it cannot be built, or with SELFSPEC_NATIVE=0,
the Python loops run.
"""

from __future__ import annotations

import threading

import torch
from torch import nn
from torch.nn import functional as F

from selfspec.engine.architectures import rolled_rotary
from selfspec.engine.attention_forms import EXACT_ROWS_LIMIT, ROWS_FORM
from selfspec.engine.cache import is_static
from selfspec.engine.lowbit import INT8_DOT_KINDS
from selfspec.engine.native_build import native_extension
from selfspec.engine.narrow_linear import (JoinedLinear, RowChosenLinear, bf16_pairs_linear, onednn_linear,
                                           onednn_two_rows_linear, thread_split_linear, weight_major_linear)
from selfspec.engine.rms_norms import norm_constants

ROWS_IN_BUFFERS = 64  # the most rows the buffers path takes: a draft token or a read of copies, not a prefill


class DraftLayers:
    """A fused walk's layers (fused_sublayers.FusedLayer) as the C++ loop takes them: every tensor gathered
    once, in one flat list per kind."""

    def __init__(self, layers, extension):
        self._extension = extension
        fused = [layer.fused for layer in layers]
        products = [p.native_product for f in fused for p in (f.qkv, f.o, f.gate_up, f.down)]
        self._norms = [t for f in fused for t in (*f.input_norm, *f.mlp_norm)]
        self._kinds = [kind for kind, _, _, _ in products]
        self._weights = [weight for _, weight, _, _ in products]
        self._scales = [scale for _, _, scale, _ in products]
        self._groups = [group for _, _, _, group in products]
        self._biases = [p.bias for f in fused for p in (f.qkv, f.o, f.gate_up, f.down)]
        first = fused[0]
        self._shape = (first.query_heads, first.groups, first.head_dim, first.scaling, first.packs_one_query)
        # A token, or a read of a few copies, in buffers (csrc/draft_in_buffers.cpp) where every product is an 8-bit dot
        # product.
        self._in_buffers = (all(kind in INT8_DOT_KINDS.values() for kind in self._kinds)
                            and first.head_dim % 8 == 0 and first.head_dim <= 512)
        if self._in_buffers:
            self._float_norms = [t.float().contiguous() for t in self._norms]
            self._float_biases = [None if b is None else b.detach().float().contiguous() for b in self._biases]
            self._buffers_shape = (first.query_heads, first.groups, first.head_dim, first.down.in_features,
                                   first.scaling)

    @property
    def name(self) -> str:
        """How reports name this loop: "c++ in buffers" where its forwards run in csrc/draft_in_buffers.cpp."""
        return "c++ in buffers" if self._in_buffers else "c++"

    def __call__(self, hidden: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor], mask, attended: int,
                 cache, plan: list[int]) -> torch.Tensor:
        """hidden's rows (q, d) through the layers, `plan[i]` saying which of layer i's sublayers run (bit 0
        attention, bit 1 MLP), their keys written to `cache` before the first `attended` keys are read."""
        # (Every mask the walk gives a windowless walk's consecutive rows is causal, as the buffers path attends.)
        if self._in_buffers and hidden.shape[0] <= ROWS_IN_BUFFERS:
            return self._extension.run_draft_in_buffers(
                hidden, *rotary, attended - hidden.shape[0], plan, self._float_norms, self._kinds, self._weights,
                self._scales, self._float_biases, *_cache_buffers(cache), *self._buffers_shape)
        return self._extension.run_draft_layers(
            hidden, *rotary, mask, attended - hidden.shape[0], plan, self._norms, self._kinds, self._groups,
            self._weights, self._scales, self._biases, *_cache_buffers(cache), *self._shape)


STATIC_ROPE_TYPES = ("default", "linear", "llama3", "yarn")  # rotary angles that depend on the position alone


class DraftTokenPath:
    """A draft token from its id to its logits in one C++ call (csrc/draft_token.h), where the layers run in
    buffers: the embedding row, the layers, the final norm and the head, their tensors gathered once. Around the
    layers the walk makes some thirty tensor operations a token, and right after a token has streamed its weights
    through the caches each costs tens of microseconds (docs/BENCHMARKS.md). The rotary rows come from a table
    made by the model's own rotary module, grown as positions need."""

    def __init__(self, layers: DraftLayers, decoder: nn.Module, head: tuple):
        kind, packed, scales, weight, candidates = head
        norm, epsilon_norm = norm_constants(decoder.norm, torch.float32)
        self._token = layers._extension.DraftToken(
            layers._float_norms, layers._kinds, layers._weights, layers._scales, layers._float_biases,
            *layers._buffers_shape, decoder.embed_tokens.weight.detach(), norm.contiguous(), epsilon_norm, kind, packed,
            scales, weight, candidates)
        self._rotary_emb = decoder.rotary_emb
        self._dtype = decoder.embed_tokens.weight.dtype
        self._tables = (torch.empty(0), torch.empty(0))
        self._growing = threading.Lock()  # requests on several threads may reach a new position at once

    def __call__(self, token: torch.Tensor, position: int, cache, plan: list[int]) -> torch.Tensor:
        """Logits (V,) in float32 for one token (1, 1) at `position`, `plan[i]` saying which of layer i's
        sublayers run, its keys written to the static `cache`."""
        tables = self._tables
        if position >= tables[0].shape[0]:
            tables = self._grow(position)
        return self._token.logits(token, position, *tables, plan, *_cache_buffers(cache))

    def _grow(self, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        with self._growing:
            size = self._tables[0].shape[0]
            if position >= size:
                size = max(2 * size, position + 1, 256)
                probe = torch.empty(1, size, 1, dtype=self._dtype)  # the rotary module reads only its dtype
                cos, signed_sin = rolled_rotary(self._rotary_emb(probe, torch.arange(size)[None]))
                self._tables = (cos.float().reshape(size, -1).contiguous(),
                                signed_sin.float().reshape(size, -1).contiguous())
            return self._tables


def draft_token_path(layers, decoder: nn.Module, head) -> DraftTokenPath | None:
    """The one-call token path for a walk's C++ draft layers and `head`, or None where it cannot run: layers not in
    buffers, a head other than an 8-bit dot product without a bias or a screened head (lowbit.py), or a rotary
    whose angles change with the length."""
    if not isinstance(layers, DraftLayers) or not layers._in_buffers:
        return None
    if getattr(decoder.rotary_emb, "rope_type", "default") not in STATIC_ROPE_TYPES:
        return None
    module = getattr(head, "lm_head", None)  # draft.FullHead over a low-bit shadow
    native = getattr(module, "screen", None)
    if native is None:
        product = getattr(module, "native_product", None)
        if product is None or product[0] not in INT8_DOT_KINDS.values() or module.bias is not None:
            return None
        native = (*product[:3], None, 0)
    return DraftTokenPath(layers, decoder, native)


def cache_ready(cache) -> bool:
    """Whether a static cache's buffers are there for the C++ loops to write (a prefill made them)."""
    return is_static(cache) and all(layer.is_initialized for layer in cache.layers)


def _cache_buffers(cache) -> tuple[list, list, list]:
    layers = cache.layers
    return ([layer.keys for layer in layers], [layer.values for layer in layers],
            [layer.cumulative_length for layer in layers])


def draft_layers(layers) -> DraftLayers | None:
    """The C++ loop for these fused layers, or None where it cannot run them: switched off, no build, a
    device other than the CPU, or a product it does not make (lowbit.LowBitLinear.native_product)."""
    fused = [getattr(layer, "fused", None) for layer in layers]
    if not fused or any(f is None for f in fused):
        return None
    products = [p for f in fused for p in (f.qkv, f.o, f.gate_up, f.down)]
    if any(getattr(p, "native_product", None) is None for p in products):
        return None
    if any(t.device.type != "cpu" for p in products for t in p.native_product[1:3]):
        return None
    extension = native_extension()
    return None if extension is None else DraftLayers(layers, extension)


# The products narrow_linear.py makes, as csrc/layer_loops.cpp names their kinds.
PRODUCT_KINDS = {F.linear: 0, thread_split_linear: 1, weight_major_linear: 2, onednn_linear: 3,
                 onednn_two_rows_linear: 4, bf16_pairs_linear: 5}
_UNUSED = (-1, torch.empty(0), None)  # a product slot a joined layer leaves empty


def _product(module: nn.Module, rows: int) -> tuple | None:
    """(kind, weight, bias) of the product `module` runs over `rows` rows; None where the loop cannot make it."""
    if isinstance(module, RowChosenLinear):
        product, weight = module.product_for(rows)
    elif type(module) is nn.Linear:
        product, weight = F.linear, module.weight
    else:
        return None
    kind = PRODUCT_KINDS.get(product)
    return None if kind is None else (kind, weight, module.bias)


def _group(owner: nn.Module, joined_name: str, parts: tuple[str, ...], rows: int) -> tuple[list, bool]:
    """The product slots of one projection group over `rows` rows, and whether they run joined."""
    joined = getattr(owner, joined_name, None)
    if isinstance(joined, JoinedLinear) and joined.joins(rows):
        kind = PRODUCT_KINDS.get(joined.product)
        return [None if kind is None else (kind, joined.weight, joined.bias)] + [_UNUSED] * (len(parts) - 1), True
    modules = joined.separate if isinstance(joined, JoinedLinear) else [getattr(owner, name) for name in parts]
    return [_product(module, rows) for module in modules], False


class FullLayers:
    """Plain layers as the engine runs them (architectures.direct_sublayers), for the C++ loop: the norms'
    constants gathered once, and the products each forward width runs looked up once per width."""

    def __init__(self, layers, extension, one_query: str, masked_queries: str):
        self._extension, self._layers = extension, layers
        self._norms = [t for layer in layers for norm in (layer.input_layernorm, layer.post_attention_layernorm)
                       for t in norm_constants(norm, torch.float32)]
        attention, config = layers[0].self_attn, layers[0].self_attn.config
        self._shape = (config.num_attention_heads, config.num_key_value_heads, attention.head_dim,
                       layers[0].mlp.down_proj.in_features, attention.scaling, one_query == "packed")
        self._takes_masks = masked_queries == "grouped"
        self._in_rows = (one_query == ROWS_FORM, masked_queries == ROWS_FORM)  # by width > 1: the "rows" form
        self._by_width: dict[int, tuple | None] = {}

    name = "c++"  # as reports name the loop

    def _products(self, rows: int) -> tuple | None:
        """(kinds, weights, biases, joined) of every layer's 7 product slots over `rows` rows; None where any
        product is one the loop does not make."""
        kinds, weights, biases, joined = [], [], [], []
        for layer in self._layers:
            qkv, qkv_joined = _group(layer.self_attn, "qkv_proj", ("q_proj", "k_proj", "v_proj"), rows)
            gate_up, gate_up_joined = _group(layer.mlp, "gate_up_proj", ("gate_proj", "up_proj"), rows)
            slots = [*qkv, _product(layer.self_attn.o_proj, rows), *gate_up, _product(layer.mlp.down_proj, rows)]
            if any(slot is None for slot in slots):
                return None
            for kind, weight, bias in slots:
                kinds.append(kind), weights.append(weight), biases.append(bias)
            joined.append(int(qkv_joined) | 2 * int(gate_up_joined))
        return kinds, weights, biases, joined

    def __call__(self, hidden: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor], mask, attended: int,
                 cache, plan: list[int]) -> torch.Tensor | None:
        """hidden (1, q, d) through the layers as `DraftLayers` runs its rows; None where this width needs what
        the loop does not make (a mask other than sdpa's boolean one, another attention form, a product)."""
        width = hidden.shape[-2]
        in_rows = self._in_rows[width > 1] and width <= EXACT_ROWS_LIMIT  # as attention_forms.with_forms takes it
        if width > 1 and not in_rows and not (self._takes_masks and mask is not None and mask.dtype == torch.bool):
            return None
        if width not in self._by_width:
            self._by_width[width] = self._products(width)
        products = self._by_width[width]
        if products is None:
            return None
        return self._extension.run_full_layers(hidden, *rotary, mask, attended - width, plan, self._norms, *products,
                                               *_cache_buffers(cache), *self._shape, in_rows)


def full_layers(layers, forms: dict) -> FullLayers | None:
    """The C++ loop for plain layers run as architectures.direct_sublayers runs them with these `forms`, or
    None where it cannot run them: switched off, no build, not on the CPU, transformers' own norms or
    attention call, or no grouped heads (with_forms then calls transformers' attention)."""
    if not layers or forms.get("norms") != "by length" or "one query" not in forms:
        return None
    attention, config = layers[0].self_attn, layers[0].self_attn.config
    if (attention.o_proj.weight.device.type != "cpu" or attention.head_dim > 256
            or config.num_attention_heads == config.num_key_value_heads):
        return None
    extension = native_extension()
    return None if extension is None else FullLayers(layers, extension, forms["one query"], forms["masked queries"])
