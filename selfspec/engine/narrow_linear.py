"""Linear layers over a few rows: the candidate products, and the stand-in layer that uses the chosen ones.

Verifying K drafts runs the full model over K+1 positions. On a memory-bound CPU that should cost
about one single-token forward (the weights are read once either way), but how close torch's CPU
`linear` comes depends on the machine and the row count: on one CPU its GEMM path over 2-9 rows costs
2-3x the one-row product, and there the same product computed weight-major, `W @ x.T`, streams W once;
oneDNN's matmul on a copy of W packed once in its own layout can beat both over 6-17 rows (on the plain
layout it re-blocks W every call); a batch of slabs of W, one per thread, can beat all of them where the
BLAS leaves a core idle over one row; on another CPU plain `linear` wins everywhere (docs/BENCHMARKS.md).
So no candidate is used blindly: row_products.py times them per weight shape and row count (one row too)
and puts a `RowChosenLinear` only where another product won, in a shadow of the model (shadow.py) that
the engine's forwards run. The model itself is never changed.

The products are the same sums in another order, so logits can differ from the one-row path by
float rounding, as they already did with the GEMM path.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from selfspec.engine.native_build import native_extension

Product = Callable[..., torch.Tensor]  # (x, weight, bias=None) -> x @ weight.T + bias, like F.linear


def weight_major_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear(x, weight, bias)` computed as (W @ x.T).T: reads W once, row by row.

    One row is padded with a zero row: a one-column product would take the matrix-vector path, the
    very one this candidate is an alternative to."""
    rows = x.numel() // x.shape[-1]
    flat = x.reshape(rows, x.shape[-1])
    if rows == 1:
        flat = torch.cat([flat, flat.new_zeros(1, flat.shape[1])])
    out = torch.mm(weight, flat.t())[:, :rows].t().contiguous()
    if bias is not None:
        out = out + bias
    return out.view(*x.shape[:-1], weight.shape[0])


def _thread_split_rows(columns: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(out, rows) = weight @ columns, as a batch of equal slabs of weight, one per thread."""
    slabs = max(2, torch.get_num_threads())
    per_slab = weight.shape[0] // slabs
    out = columns.new_empty(weight.shape[0], columns.shape[1])
    split = slabs * per_slab
    if per_slab:
        torch.bmm(weight[:split].view(slabs, per_slab, -1), columns.expand(slabs, *columns.shape),
                  out=out[:split].view(slabs, per_slab, columns.shape[1]))
    if split < weight.shape[0]:
        torch.mm(weight[split:], columns, out=out[split:])
    return out


# The same as an op of its own, for compiled steps to call as it is: inductor lowers the batched product to
# a kernel of its own, and the compiled one-token step ran 85.6 ms with it against 62.9 with weight-major.
# Eager forwards call the function itself: a custom op's dispatch costs tens of microseconds a call.
_thread_split_rows_op = torch.library.custom_op("selfspec::thread_split_rows", mutates_args=())(_thread_split_rows)


@_thread_split_rows_op.register_fake
def _(columns, weight):
    return columns.new_empty(weight.shape[0], columns.shape[1])


def thread_split_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear(x, weight, bias)` computed weight-major as a batch of equal slabs of W, one per thread
    (`torch.bmm`), the few rows left over by one more product.

    Over one or a few rows the BLAS's own threading can leave a core idle, so W streams at one core's
    speed; a batch is divided among the threads, each reading its own slab."""
    rows = x.numel() // x.shape[-1]
    compiling = torch.compiler.is_compiling()
    # (The thread count is read only outside a compiled graph: dynamo cannot trace the call, and breaking
    # the graph there, in every product, split a compiled step into a graph per product.)
    slabs = 0 if compiling else max(2, torch.get_num_threads())
    if rows == 1 and slabs and weight.shape[0] % slabs == 0 and weight.is_contiguous() and x.is_contiguous():
        # A decoding step's one row is already a column, and equal slabs need no output to fill in parts:
        # the same batched product in four operations instead of eleven, a few microseconds a layer's product.
        # The column is the row seen as (in, 1) with the row's length as its leading dimension, as the BLAS
        # wants (with unit strides throughout, the product took a path ten times slower), once per slab.
        columns = x.as_strided((slabs, x.shape[-1], 1), (0, 1, x.shape[-1]))
        out = torch.bmm(weight.view(slabs, -1, weight.shape[1]), columns)
        out = out.view(*x.shape[:-1], weight.shape[0])
        return out if bias is None else out + bias
    split_rows = _thread_split_rows_op if compiling else _thread_split_rows
    out = split_rows(x.reshape(rows, x.shape[-1]).t().contiguous(), weight).t().contiguous()
    if bias is not None:
        out = out + bias
    return out.view(*x.shape[:-1], weight.shape[0])


def onednn_available(device: torch.device) -> bool:
    """Whether this build has oneDNN's linear for dense CPU tensors (the op torch's inductor emits)."""
    return device.type == "cpu" and torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn,
                                                                                     "_linear_pointwise")


def _onednn_rows(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


# The same as an op of its own, for compiled steps to call as it is: inductor's lowering of the oneDNN op
# expects the packed weights of its own weight-prepacking pass and fails on a plain one. Eager forwards
# call the op directly (a custom op's dispatch costs tens of microseconds a call).
_onednn_rows_op = torch.library.custom_op("selfspec::onednn_linear", mutates_args=())(_onednn_rows)


@_onednn_rows_op.register_fake
def _(x, weight, bias):
    return x.new_empty(x.shape[0], weight.shape[0])


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear(x, weight, bias)` through oneDNN's matmul, on the weight as it is or on its packed copy
    (`onednn_packed`)."""
    rows = _onednn_rows_op if torch.compiler.is_compiling() else _onednn_rows
    out = rows(x.reshape(-1, x.shape[-1]), weight, bias)
    return out.view(*x.shape[:-1], weight.shape[0])


def onednn_two_rows_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`onednn_linear`, with one row padded with a zero row: oneDNN's one-row kernel can sum a row in another order
    than its kernel of several rows (the matrix-vector path splits long rows), and so round it otherwise; as two
    rows, a step's row gets what it gets among a verification's (row_products.rows_agree)."""
    rows = x.numel() // x.shape[-1]
    if rows != 1:
        return onednn_linear(x, weight, bias)
    flat = x.reshape(1, x.shape[-1])
    out = onednn_linear(torch.cat([flat, flat.new_zeros(1, flat.shape[1])]), weight, bias)[:1]
    return out.view(*x.shape[:-1], weight.shape[0])


PACKED_FOR_ROWS = 9  # the row count oneDNN lays a packed weight out for: the widest verification of K = 8


def onednn_packed(weight: torch.Tensor) -> torch.Tensor:
    """A copy of `weight` in oneDNN's own blocked layout (an opaque tensor of the same shape and bytes),
    made once, for `onednn_linear`. On the plain layout every call re-blocks W over a few rows, which
    is why a few-row product costs more than a one-row one; on the packed copy it streams W once."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), PACKED_FOR_ROWS)


def onednn_packing_available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether oneDNN can pack weights of this dtype here (bfloat16 needs AVX-512 or AVX-NE-CONVERT)."""
    if not onednn_available(device) or not hasattr(torch.ops.mkldnn, "_reorder_linear_weight"):
        return False
    try:
        onednn_packed(torch.zeros(8, 8, dtype=dtype))
    except RuntimeError:
        return False
    return True


BF16_PAIRS_BLOCK = 16  # outputs a block of bf16_pairs_packed's layout holds


def bf16_pairs_fit(shape: tuple[int, int]) -> bool:
    """Whether a weight of this (out, in) shape can be laid out for `bf16_pairs_linear`."""
    return shape[0] % BF16_PAIRS_BLOCK == 0 and shape[1] % 2 == 0


def bf16_pairs_packed(weight: torch.Tensor) -> torch.Tensor:
    """A copy of a bfloat16 `weight` (out, in) laid out for `bf16_pairs_linear` (csrc/bf16_pair_products.cpp):
    blocks of 16 outputs; per block and pair of inputs, the 16 outputs' two weights side by side."""
    out, inputs = weight.shape
    return (weight.detach().reshape(out // BF16_PAIRS_BLOCK, BF16_PAIRS_BLOCK, inputs // 2, 2).permute(0, 2, 1, 3)
            .contiguous().view(out // BF16_PAIRS_BLOCK, inputs // 2, 2 * BF16_PAIRS_BLOCK))


def bf16_pairs_available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether `bf16_pairs_linear` runs here: bfloat16 on a CPU with AVX512-BF16, and the C++ extension built."""
    if device.type != "cpu" or dtype != torch.bfloat16:
        return False
    extension = native_extension()
    return extension is not None and extension.bf16_pairs_available()


def _bf16_pairs_rows(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return native_extension().bf16_pairs_mm(x, weight, bias)


# An op of its own for compiled steps, as `_onednn_rows_op` is; eager forwards call the extension directly.
_bf16_pairs_op = torch.library.custom_op("selfspec::bf16_pairs_linear", mutates_args=())(_bf16_pairs_rows)


@_bf16_pairs_op.register_fake
def _(x, weight, bias):
    return x.new_empty(*x.shape[:-1], weight.shape[0] * BF16_PAIRS_BLOCK)


def bf16_pairs_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear(x, w, bias)` for bfloat16, `weight` being `bf16_pairs_packed(w)`, by AVX512-BF16's pair dot products:
    every row summed in one order whatever rows share the call (so a verification's rows are exactly one-token
    steps' rows), the weights streamed once for up to nine rows, and ~1 us a call where oneDNN's costs ~10."""
    rows = _bf16_pairs_op if torch.compiler.is_compiling() else _bf16_pairs_rows
    return rows(x, weight, bias)


class RowChosenLinear(nn.Module):
    """An nn.Linear's stand-in: the chosen product for each chosen row count, torch's `linear` otherwise.

    It holds the layer's own weight and bias tensors, and the product of a row count reads the layer's
    weight or, where `weights` gives one, a copy made for that product (oneDNN's packed layout). A module
    rather than a function mode, so that only the swapped layers pay for the choice, not every operation
    of the forward.
    """

    def __init__(self, linear: nn.Linear, products: Mapping[int, Product],
                 weights: Mapping[int, torch.Tensor] | None = None,
                 prefill: tuple[int, Product, torch.Tensor] | None = None):
        """`prefill`: (from rows, product, the weight it reads) for every row count from there that
        `products` does not name (a prompt's prefill), or None for `linear`."""
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        # rows -> (product, the weight it reads): one lookup per call
        self._chosen = {rows: (product, (weights or {}).get(rows, self.weight)) for rows, product in products.items()}
        self._plain = (F.linear, self.weight)
        self._prefill_rows = prefill[0] if prefill else math.inf
        self._prefill = tuple(prefill[1:]) if prefill else self._plain

    @property
    def products(self) -> dict[int, Product]:
        """rows -> the product chosen for that many rows."""
        return {rows: product for rows, (product, _) in self._chosen.items()}

    @property
    def prefill_product(self) -> Product | None:
        """The product of PREFILL rows (None: `linear`)."""
        return self._prefill[0] if self._prefill_rows < math.inf else None

    def product_for(self, rows: int) -> tuple[Product, torch.Tensor]:
        """The product that runs over `rows` rows, and the weight it reads."""
        return self._chosen.get(rows) or (self._prefill if rows >= self._prefill_rows else self._plain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        product, weight = self.product_for(x.numel() // self.in_features)
        return product(x, weight, self.bias)

    def extra_repr(self) -> str:
        named: dict[str, list[int]] = {}
        for rows, product in sorted(self.products.items()):
            named.setdefault(product.__name__, []).append(rows)
        prefill = f"; {self._prefill[0].__name__} rows>={self._prefill_rows}" if self.prefill_product else ""
        return f"in={self.in_features}, out={self.out_features}, " + "; ".join(
            f"{name} rows={rows}" for name, rows in named.items()) + prefill


class JoinedLinear(nn.Module):
    """Linear layers that read the same input (a layer's q/k/v, its gate/up) as one product over a copy of
    their stacked weights (architectures.join_projections) where that is faster: one call and one pass
    over the weights where there were several. Each output column is still its own weight row's product
    with the input. Over other row counts the parts run as they would alone. Returns the parts' outputs."""

    def __init__(self, stacked: nn.Linear, widths: tuple[int, ...], product: Product, weight: torch.Tensor,
                 rows: frozenset[int], from_rows: int | None, separate: tuple[nn.Module, ...]):
        """`stacked`: the parts' rows as one layer (architectures.stacked_linear); `weight`: what `product`
        reads, made from it (oneDNN's packed copy, or the stack itself); `rows` (and every row count from
        `from_rows`, unless None): where the joined product runs; `separate`: the parts (or their stand-ins)
        elsewhere."""
        super().__init__()
        self.in_features, self.out_features, self.widths = stacked.in_features, stacked.out_features, widths
        self.product, self.weight = product, weight
        self.bias = None if stacked.bias is None else stacked.bias.detach()  # a tensor, not a parameter of the model
        self.rows, self.from_rows = rows, math.inf if from_rows is None else from_rows
        self.separate = separate  # a tuple, not submodules: from outside this is one product
        # Their forwards, called directly: a module's call costs microseconds that a one-row step notices
        # (parts are never hooked: only walkable_plain_layers join their projections).
        self._separate_forwards = tuple(part.forward for part in separate)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        whole = self.joined(x)
        if whole is None:
            return tuple([part(x) for part in self._separate_forwards])
        return whole.split_with_sizes(self.widths, -1)  # (Tensor.split's Python wrapper costs a microsecond more)

    def joined(self, x: torch.Tensor) -> torch.Tensor | None:
        """The parts' outputs side by side, as one tensor, over the row counts joined; None over the others."""
        return self.product(x, self.weight, self.bias) if self.joins(x.numel() // self.in_features) else None

    def joins(self, rows: int) -> bool:
        """Whether the joined product runs over `rows` rows (else the parts do)."""
        return rows in self.rows or rows >= self.from_rows

    def extra_repr(self) -> str:
        where = sorted(self.rows) + ([f"{self.from_rows}+"] if self.from_rows < math.inf else [])
        return f"in={self.in_features}, out={'+'.join(map(str, self.widths))}, {self.product.__name__} rows={where}"
