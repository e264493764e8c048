"""Low-bit draft weights: a shadow of the model whose linear layers read int8 or int4 copies.

A draft token costs what reading the weights costs (decoding one token is memory-bound), so a draft
with 8- or 4-bit weights costs a fraction of a full forward while agreeing with the full model on
most tokens (QuantSpec, ML-SpecQD). The verification still runs the untouched model, so output stays
exactly the full model's.

`low_bit_shadow` builds the copy *beside* the model: `copy.deepcopy` with every parameter and buffer
in the memo shares all tensors and copies only the module objects, then each `nn.Linear` of the copy
(lm_head included) is replaced by a small module holding quantised weights. Tied embeddings stay
shared with the embedding; the model itself is never touched. Which kernel computes a product is
measured per machine and shape (kernels.choose_fastest): torch's `_weight_int8pack_mm` with bf16
activations wins on an AMX Xeon, while with fp32 activations it loses there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from selfspec.engine.architectures import decoder_layers, plain_llama_layers
from selfspec.engine.attention_forms import ONE_QUERY_FORMS, one_query_form
from selfspec.engine.devices import dtype_name
from selfspec.engine.fused_sublayers import fuse_projections
from selfspec.engine.kernels import choose_fastest
from selfspec.engine.native_build import native_extension
from selfspec.engine.shadow import linear_slots, shadow_copy

DRAFT_WEIGHTS = ("full", "int8", "int4")
# The product kinds csrc/layer_loops.cpp makes: torch's two, then the 8-bit dot products (csrc/products.h) by
# weight bits and instructions.
NATIVE_INT4PACK_CPU, NATIVE_INT8PACK = 0, 1
INT8_DOT_KINDS = {(4, "vnni"): 2, (8, "vnni"): 3, (4, "avx2"): 4, (8, "avx2"): 5, (2, "vnni"): 6, (2, "avx2"): 7}


# --- quantisation ---------------------------------------------------------------------------------


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: weight ~= q * scale[:, None]; q in -127..127."""
    w = weight.detach().float()
    scale = w.abs().amax(dim=1).clamp(min=1e-8) / 127
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


INT4_GROUP = 32  # finer groups cost more scales; 32 matches GGUF's Q4 blocks, so such weights come back exactly


def int4_group_size(in_features: int) -> int | None:
    return INT4_GROUP if in_features % INT4_GROUP == 0 else None


def quantize_asymmetric(weight: torch.Tensor, group: int, bits: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-group min-max quantisation: weight ~= q * scale + low, q in 0..2^bits - 1.

    Returns q (out, in) int32, and scale, low (out, in/group).
    """
    w = weight.detach().float()
    out_features, in_features = w.shape
    groups = w.reshape(out_features, in_features // group, group)
    low, high = groups.amin(-1), groups.amax(-1)
    top = 2 ** bits - 1
    scale = (high - low).clamp(min=1e-8) / top
    q = torch.round((groups - low[..., None]) / scale[..., None]).clamp(0, top).to(torch.int32)
    return q.reshape(out_features, in_features), scale, low


def quantize_int4(weight: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric per-group int4 in torch's int4pack convention: weight ~= (q - 8) * scale + zero.

    Returns q (out, in) int32 in 0..15, and scale, zero (out, in/group).
    """
    q, scale, low = quantize_asymmetric(weight, group, 4)
    return q, scale, low + 8 * scale


def quantize_int4_coded(weight: torch.Tensor, group: int) -> tuple[torch.Tensor, ...]:
    """quantize_int4 with each group's scale and zero as a byte code times a float32 step of its row: scale =
    scale_code * scale_step (codes 1..255, rounded up so that the grid still spans the group), zero = zero_code *
    zero_step (codes -127..127); q is rounded against the coded values. The codes take half the bytes of float16
    pairs and kept the draft's agreement (docs/BENCHMARKS.md, "int4 scales as byte codes").

    Returns q (out, in) int32 in 0..15, scale_code (out, in/group) uint8, zero_code int8, scale_step (out,) and
    zero_step (out,) float32: weight ~= (q - 8) * scale_code * scale_step + zero_code * zero_step. (Steps in float16
    would be subnormal for rows of small weights, too coarse for the codes to span their groups.)"""
    _, scale, zero = quantize_int4(weight, group)
    scale_step = scale.amax(-1) / 255
    scale_code = torch.ceil(scale / scale_step[:, None] * (1 - 2 ** -20)).clamp(1, 255)  # not 256 for the largest
    zero_step = (zero.abs().amax(-1) / 127).clamp(min=1e-30)
    zero_code = torch.round(zero / zero_step[:, None]).clamp(-127, 127)
    coded_scale = scale_code * scale_step[:, None]
    coded_zero = zero_code * zero_step[:, None]
    out_features, in_features = weight.shape
    groups = weight.detach().float().reshape(out_features, in_features // group, group)
    q = torch.round((groups - coded_zero[..., None]) / coded_scale[..., None] + 8).clamp(0, 15).to(torch.int32)
    return (q.reshape(out_features, in_features), scale_code.to(torch.uint8), zero_code.to(torch.int8), scale_step,
            zero_step)


def dequantize_int4_coded(q: torch.Tensor, scale_code: torch.Tensor, zero_code: torch.Tensor,
                          scale_step: torch.Tensor, zero_step: torch.Tensor) -> torch.Tensor:
    scale = scale_code.float() * scale_step.float()[:, None]
    zero = zero_code.float() * zero_step.float()[:, None]
    return dequantize_int4(q, scale, zero)


def dequantize_int4(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    out_features, in_features = q.shape
    group = in_features // scale.shape[1]
    groups = q.reshape(out_features, -1, group).float()
    return ((groups - 8) * scale[..., None] + zero[..., None]).reshape(out_features, in_features)


# --- the linear layers of the shadow ----------------------------------------------------------------


class LowBitLinear(nn.Module):
    """y = x W^T + b with W held in low bits; `product` is the chosen kernel. The bias stays shared."""

    def __init__(self, linear: nn.Linear, kernel: str, product: Callable[[torch.Tensor], torch.Tensor],
                 tensors: dict[str, torch.Tensor], extra_bytes: int, native_product: tuple | None = None):
        super().__init__()
        # (kind, weight, scale, group): how native_layers.py's C++ loop makes the same product; None: it cannot.
        self.native_product = native_product
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.kernel = kernel
        self.product = product
        self.bias = linear.bias  # the model's own tensor, not a copy
        self.extra_bytes = extra_bytes  # memory this layer adds beside the model
        for name, tensor in tensors.items():
            self.register_buffer(name, tensor, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.native(x).to(x.dtype)

    def native(self, x: torch.Tensor) -> torch.Tensor:
        """The product in the dtype the kernel returns (bfloat16 for most), not cast back: for a caller
        whose next operation mixes dtypes anyway, one cast a layer fewer (fused_sublayers.py)."""
        rows = x.dim() == 2  # rows already (the fused draft's stream): no reshape either way
        y = self.product(x if rows else x.reshape(-1, self.in_features))
        if self.bias is not None:
            y = y + self.bias
        return y if rows else y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, kernel={self.kernel}"


def _nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


# Each builder quantises one nn.Linear for one kernel; a builder raises where the kernel is missing.


def _int8pack(linear: nn.Linear, act_dtype: torch.dtype | None) -> LowBitLinear:
    """torch's weight-only int8 product; activations cast to `act_dtype` (None: the model's dtype)."""
    q, scale = quantize_int8(linear.weight)
    dtype = act_dtype or linear.weight.dtype
    q, scale = q.to(linear.weight.device), scale.to(linear.weight.device, dtype)
    product = lambda x: torch.ops.aten._weight_int8pack_mm(x.to(dtype), q, scale)  # noqa: E731
    name = "int8pack" if act_dtype is None else f"int8pack-{dtype_name(act_dtype)}"
    return LowBitLinear(linear, name, product, {"q": q, "scale": scale}, _nbytes(q, scale),
                        native_product=(NATIVE_INT8PACK, q, scale, 0))


def _int8_dequantize(linear: nn.Linear) -> LowBitLinear:
    """Portable fallback (any device): int8 weights widened per call. Saves memory, rarely time."""
    q, scale = quantize_int8(linear.weight)
    q, scale = q.to(linear.weight.device), scale.to(linear.weight.device, linear.weight.dtype)
    product = lambda x: F.linear(x, q.to(x.dtype)) * scale  # noqa: E731
    return LowBitLinear(linear, "int8-dequantize", product, {"q": q, "scale": scale}, _nbytes(q, scale))


def _int4pack(linear: nn.Linear, act_dtype: torch.dtype) -> LowBitLinear:
    """torch's weight-only int4 product (per-group scale and zero), CPU or CUDA layout."""
    group = int4_group_size(linear.in_features)
    if group is None:
        raise RuntimeError(f"no int4 group size divides {linear.in_features}")
    q, scale, zero = quantize_int4(linear.weight, group)
    device = linear.weight.device
    scales_and_zeros = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous().to(device, act_dtype)
    if device.type == "cpu":
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
        kernel = torch.ops.aten._weight_int4pack_mm_for_cpu
    else:
        pairs = (q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8).to(device)
        packed = torch.ops.aten._convert_weight_to_int4pack(pairs, 8)
        kernel = torch.ops.aten._weight_int4pack_mm
    product = lambda x: kernel(x.to(act_dtype), packed, group, scales_and_zeros)  # noqa: E731
    name = f"int4pack-{dtype_name(act_dtype)}"
    native_product = (NATIVE_INT4PACK_CPU, packed, scales_and_zeros, group) if device.type == "cpu" else None
    return LowBitLinear(linear, name, product, {"packed": packed, "scales_and_zeros": scales_and_zeros},
                        _nbytes(packed, scales_and_zeros), native_product)


INT8_DOT_BLOCK = 16  # output rows one 8-bit dot instruction serves (csrc/int8_dot_products.cpp)
INT8_DOT_GROUP = 32  # inputs whose activations share one int8 scale there (the int4 weights' groups must match)
INT8_DOT_MARGIN = 0.2  # how much faster another kernel must measure to be chosen over the 8-bit dot products


def pack_int4_for_int8_dot(q: torch.Tensor, scale_code: torch.Tensor, zero_code: torch.Tensor,
                           scale_step: torch.Tensor, zero_step: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """quantize_int4_coded's output at group INT8_DOT_GROUP in csrc/int8_dot_products.cpp's layout: per block of 16
    output rows and group of 32 inputs, four 64-byte chunks of 8 inputs, row r's bytes 4r..4r+3 holding inputs 0..3
    in their low nibbles and 4..7 in their high ones. Per block, its rows' 16 scale steps and 16 zero steps (float32
    bytes), then per group its 16 scale codes and 16 zero codes (a draft token streams every weight and scale once)."""
    out_features, in_features = q.shape
    blocks, groups = out_features // INT8_DOT_BLOCK, in_features // INT8_DOT_GROUP
    nibbles = q.to(torch.uint8).view(blocks, INT8_DOT_BLOCK, groups, 4, 2, 4)  # (.., chunk, low/high, input)
    chunks = (nibbles[..., 0, :] | nibbles[..., 1, :] << 4).permute(0, 2, 3, 1, 4)  # (block, group, chunk, row, 4)
    steps = torch.stack([scale_step.float(), zero_step.float()]).view(2, blocks, INT8_DOT_BLOCK).transpose(0, 1)
    per_block = lambda t: t.view(torch.uint8).view(blocks, INT8_DOT_BLOCK, groups).transpose(1, 2)  # noqa: E731
    codes = torch.stack([per_block(scale_code), per_block(zero_code)], dim=2)  # (block, group, 2, row)
    header = steps.contiguous().view(torch.uint8).reshape(blocks, -1)
    return chunks.reshape(blocks, groups, -1).contiguous(), torch.cat([header, codes.reshape(blocks, -1)], 1)


def pack_int8_for_int8_dot(q: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """quantize_int8's (q, scale) in the int8 layout: per block of 16 output rows and group of 32 inputs, eight
    64-byte chunks of 4 inputs, row r's bytes 4r..4r+3 holding its weights plus 128; the scales as they are."""
    out_features, in_features = q.shape
    blocks, groups = out_features // INT8_DOT_BLOCK, in_features // INT8_DOT_GROUP
    unsigned = (q.to(torch.int16) + 128).to(torch.uint8).view(blocks, INT8_DOT_BLOCK, groups, 8, 4)
    return unsigned.permute(0, 2, 3, 1, 4).reshape(blocks, groups, -1).contiguous(), scale.float().contiguous()


def _int8_dot(linear: nn.Linear, bits: int, instructions: str) -> LowBitLinear:
    """int4 or int8 weights times activations rounded to int8 per group of 32, by 8-bit dot instructions
    (csrc/int8_dot_products.cpp: "vnni", AVX512-VNNI, or "avx2"): at memory speed where torch's int4 product
    widens every weight to floats."""
    extension = native_extension()
    if extension is None or linear.weight.device.type != "cpu":
        raise RuntimeError("the 8-bit dot products need the C++ extension, on a CPU")
    if linear.in_features % INT8_DOT_GROUP or linear.out_features % INT8_DOT_BLOCK:
        raise RuntimeError(f"the 8-bit dot products take {INT8_DOT_BLOCK}-row blocks of {INT8_DOT_GROUP}-input groups")
    kind = INT8_DOT_KINDS[bits, instructions]
    if bits == 4:
        packed, scales = pack_int4_for_int8_dot(*quantize_int4_coded(linear.weight, INT8_DOT_GROUP))
    else:
        packed, scales = pack_int8_for_int8_dot(*quantize_int8(linear.weight))
    product = lambda x: extension.int8_dot_mm(kind, x, packed, scales)  # noqa: E731
    product(torch.zeros(1, linear.in_features))  # raises on a CPU without the instructions
    name = f"int{bits}-int8dot" + ("" if instructions == "vnni" else f"-{instructions}")
    return LowBitLinear(linear, name, product, {"packed": packed, "scales": scales}, _nbytes(packed, scales),
                        (kind, packed, scales, INT8_DOT_GROUP))


def _int8_dot_builders(bits: int) -> dict[str, Callable]:
    return {f"int{bits}-int8dot": lambda lin: _int8_dot(lin, bits, "vnni"),
            f"int{bits}-int8dot-avx2": lambda lin: _int8_dot(lin, bits, "avx2")}


def pack_int2_for_int8_dot(q: torch.Tensor, scale: torch.Tensor,
                           low: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """quantize_asymmetric's 2-bit (q, scale, low) at group INT8_DOT_GROUP in csrc/int8_dot_products.cpp's int2
    layout: per block of 16 output rows and group of 32 inputs, two 64-byte chunks of 16 inputs, row r's bytes
    4r..4r+3, byte b holding input 16c + 4s + b in its bits 2s (chunk c); then per block and group 16 scales and
    16 lows in float16."""
    out_features, in_features = q.shape
    blocks, groups = out_features // INT8_DOT_BLOCK, in_features // INT8_DOT_GROUP
    crumbs = q.to(torch.uint8).view(blocks, INT8_DOT_BLOCK, groups, 2, 4, 4)  # (.., chunk, shift, byte)
    shifted = crumbs << (2 * torch.arange(4, dtype=torch.uint8)).view(4, 1)
    packed = (shifted[..., 0, :] | shifted[..., 1, :] | shifted[..., 2, :] | shifted[..., 3, :])
    per_block = lambda t: t.half().view(blocks, INT8_DOT_BLOCK, groups).transpose(1, 2)  # noqa: E731
    scales_and_lows = torch.stack([per_block(scale), per_block(low)], dim=2)  # (block, group, 2, row)
    return packed.permute(0, 2, 3, 1, 4).reshape(blocks, groups, -1).contiguous(), scales_and_lows.contiguous()


SCREEN_CANDIDATES = 64  # tokens a screened head scores again from the model's weights


class ScreenedHead(LowBitLinear):
    """A draft's output head as an int2 screen over the whole vocabulary and a second look at its best
    SCREEN_CANDIDATES tokens through the model's own weights (csrc/screened_head.cpp): a third of an int8
    head's bytes, and the draft's top choice nearly always among those rescored. Logits stay in float32: what
    reads them (an argmax, a softmax) widens them anyway."""

    def __init__(self, linear: nn.Linear, kernel: str, product: Callable[[torch.Tensor], torch.Tensor],
                 tensors: dict[str, torch.Tensor], extra_bytes: int, screen: tuple):
        super().__init__(linear, kernel, product, tensors, extra_bytes)
        self.screen = screen  # (kind, packed, scales, weight, candidates): how native_layers.py's token path makes it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.product(x)


def _screened_head(linear: nn.Linear, instructions: str) -> ScreenedHead:
    extension = native_extension()
    if extension is None or linear.weight.device.type != "cpu":
        raise RuntimeError("the screened head needs the C++ extension, on a CPU")
    if linear.bias is not None or linear.in_features % INT8_DOT_GROUP or linear.out_features % INT8_DOT_BLOCK:
        raise RuntimeError(f"the screened head takes a head without a bias, {INT8_DOT_BLOCK}-row blocks of "
                           f"{INT8_DOT_GROUP}-input groups")
    kind = INT8_DOT_KINDS[2, instructions]
    packed, scales = pack_int2_for_int8_dot(*quantize_asymmetric(linear.weight, INT8_DOT_GROUP, 2))
    # The model's own weight is read for the candidates only.
    screen = (kind, packed, scales, linear.weight.detach(), min(SCREEN_CANDIDATES, linear.out_features))
    product = lambda x: extension.screened_logits(x, *screen)  # noqa: E731
    product(torch.zeros(1, linear.in_features))  # raises on a CPU without the instructions
    name = "int2-screened" + ("" if instructions == "vnni" else f"-{instructions}")
    return ScreenedHead(linear, name, product, {"packed": packed, "scales": scales}, _nbytes(packed, scales), screen)


def head_builders(builders: dict[str, Callable], device: torch.device) -> dict[str, Callable]:
    """The output head's candidates: its bits' kernels, then on a CPU the screened heads."""
    if device.type != "cpu":
        return builders
    return builders | {"int2-screened": lambda lin: _screened_head(lin, "vnni"),
                       "int2-screened-avx2": lambda lin: _screened_head(lin, "avx2")}


def _int4_dequantize(linear: nn.Linear) -> LowBitLinear:
    """Portable int4 fallback: the int4 values held one per byte and widened per call."""
    group = int4_group_size(linear.in_features)
    if group is None:
        raise RuntimeError(f"no int4 group size divides {linear.in_features}")
    q, scale, zero = quantize_int4(linear.weight, group)
    device, dtype = linear.weight.device, linear.weight.dtype
    q8, scale, zero = q.to(torch.uint8).to(device), scale.to(device, dtype), zero.to(device, dtype)
    product = lambda x: F.linear(x, dequantize_int4(q8, scale, zero).to(x.dtype))  # noqa: E731
    return LowBitLinear(linear, "int4-dequantize", product, {"q": q8, "scale": scale, "zero": zero},
                        _nbytes(q8, scale, zero))


def kernel_builders(weights: str, dtype: torch.dtype, device: torch.device) -> dict[str, Callable]:
    """The candidate kernels for `weights` at this dtype and device, fastest-first guesses first."""
    if weights == "int8":
        # Weight-only on purpose: fbgemm's dynamic W8A8 product is faster on AVX2 CPUs, but quantising
        # activations per tensor dropped SmolLM2's draft agreement from 0.96 to 0.43 (outlier features).
        builders = {}
        builders["int8pack-bfloat16"] = lambda lin: _int8pack(lin, torch.bfloat16)
        if dtype != torch.bfloat16:
            builders["int8pack"] = lambda lin: _int8pack(lin, None)
        if device.type == "cpu":
            builders |= _int8_dot_builders(8)
        builders["int8-dequantize"] = _int8_dequantize
        return builders
    if weights == "int4":
        builders = {"int4pack-bfloat16": lambda lin: _int4pack(lin, torch.bfloat16)}
        if device.type == "cpu":
            builders |= _int8_dot_builders(4)
        if device.type == "cpu" and dtype == torch.float32:
            builders["int4pack-float32"] = lambda lin: _int4pack(lin, torch.float32)
        builders["int4-dequantize"] = _int4_dequantize
        return builders
    raise ValueError(f"low-bit draft weights are {', '.join(DRAFT_WEIGHTS[1:])}; got {weights!r}")


# --- the shadow model -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LowBitReport:
    weights: str
    extra_bytes: int  # memory the low-bit copies add beside the model
    kernels: dict[str, str] = field(default_factory=dict)  # "out x in" -> the kernel chosen for that shape
    build_seconds: float = 0.0
    fused: bool = False  # q/k/v and gate/up fused into one product each (fused_sublayers.py)

    def to_dict(self) -> dict:
        return {"weights": self.weights, "extra_bytes": self.extra_bytes, "kernels": dict(self.kernels),
                "build_seconds": round(self.build_seconds, 3), "fused": self.fused}


def layer_weights(weights: str, linear: nn.Linear, is_head: bool) -> str:
    """The bits one layer gets: int4 drafts keep the output head at int8, as GGUF's Q4 files keep it
    at 6-8 bits (measured on SmolLM2: an int4 head alone drops draft agreement from 0.96 to ~0.85),
    and rows no int4 group divides fall back to int8 too."""
    if weights == "int4" and (is_head or int4_group_size(linear.in_features) is None):
        return "int8"
    return weights


def choose_kernel(weights: str, linear: nn.Linear, builders: dict[str, Callable], role: str = "linear") -> str:
    """The fastest builder for this layer's shape on this machine (timed once, then cached); `role`: "head"
    for the output head, whose candidates differ."""
    device = linear.weight.device
    x = torch.randn(1, linear.in_features, dtype=linear.weight.dtype, device=device)
    candidates = {}
    for name, build in builders.items():
        try:
            layer = build(linear)
        except (RuntimeError, NotImplementedError):
            continue  # this build or device lacks the kernel
        candidates[name] = (lambda layer=layer: layer(x))
    key = f"draft-{role}:{weights}:{dtype_name(linear.weight.dtype)}:{linear.out_features}x{linear.in_features}"
    # Where every product of a fused layer is an 8-bit dot product, a draft token runs in buffers
    # (native_layers.DraftLayers), which saves more than a near-tie of one product: another kernel must win clearly.
    usual = next((name for name in candidates if "-int8dot" in name), None)
    with torch.inference_mode():
        return choose_fastest(key, candidates, device, repeats=5, rounds=2, incumbent=usual,
                              margin=INT8_DOT_MARGIN).name


def low_bit_shadow(model: nn.Module, weights: str, kernels: dict[str, str] | None = None,
                   fuse: bool = True) -> tuple[nn.Module, LowBitReport]:
    """A shadow of `model` whose every nn.Linear holds `weights` ("int8" or "int4") copies.

    `kernels` forces a kernel per bit width, e.g. {"int8": "int8pack"}, the output head's, e.g. {"head":
    "int2-screened"}, and the fused layers' one-query attention form, e.g. {"attention": "packed"} (tests,
    benchmarks); by default each shape gets the
    fastest measured on this machine. With `fuse`, Llama-family layers get fused q/k/v and gate/up
    products (fused_sublayers.py); `report.fused` says whether they did.
    """
    t0 = time.perf_counter()
    probe = model.get_input_embeddings().weight
    builders = {kind: kernel_builders(kind, probe.dtype, probe.device) for kind in ("int8", weights)}
    for kind, name in (kernels or {}).items():
        if kind == "head":
            known = head_builders(builders["int8"] | builders[weights], probe.device)
        else:
            known = ONE_QUERY_FORMS if kind == "attention" else builders.get(kind, {})
        if name not in known:
            raise ValueError(f"{name!r} is not among the {kind} kernels for {dtype_name(probe.dtype)} on "
                             f"{probe.device} (those are: {', '.join(known) or 'none'})")
    shadow = shadow_copy(model)
    head = shadow.get_output_embeddings()
    chosen: dict[tuple[str, int, int], str] = {}
    extra = 0

    def quantise(linear: nn.Linear) -> LowBitLinear:
        nonlocal extra
        kind = layer_weights(weights, linear, linear is head)
        role = "head" if linear is head else "linear"
        candidates = head_builders(builders[kind], probe.device) if linear is head else builders[kind]
        shape = (kind, linear.out_features, linear.in_features, role)
        if shape not in chosen:
            chosen[shape] = (kernels or {}).get(role) or (kernels or {}).get(kind) or choose_kernel(
                kind, linear, candidates, role)
        layer = candidates[chosen[shape]](linear)
        extra += layer.extra_bytes
        return layer

    fused = fuse and plain_llama_layers(shadow)
    report = {}
    if fused:
        attention = decoder_layers(shadow)[0].self_attn
        query_form = (kernels or {}).get("attention") or one_query_form(attention, probe.dtype, probe.device)
        report[f"attention {attention.config.num_attention_heads}x{attention.config.num_key_value_heads}"] = query_form
        for layer in decoder_layers(shadow):
            fuse_projections(layer, quantise, query_form)
    for parent, name, linear in linear_slots(shadow):
        setattr(parent, name, quantise(linear))
    report |= {f"{kind} {o}x{i}" + (" head" if role == "head" else ""): name
               for (kind, o, i, role), name in chosen.items()}
    return shadow, LowBitReport(weights, extra, report, time.perf_counter() - t0, fused)
