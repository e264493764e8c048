"""Which product each of the model's linear layers uses over 1..17 rows, chosen by timing.

A decoding step runs the full model over one position, a verification over K+1 (2..9) or over copied
context tokens and drafts (up to 17). How fast
torch's `linear` is over so few rows depends on the machine: on one CPU the weight-major product
(narrow_linear.py) is much faster, even for one row padded to two (torch's one-row path may use a
single core), and oneDNN's matmul faster still over 10-17 rows; on another plain `linear` wins
(figures in docs/BENCHMARKS.md). So at load the engine times the candidates, per weight shape and per
row bucket, at the model's own weights and dtype, and every full-model forward of a few rows uses the
fastest (kernels.py caches the choice per machine).

Each candidate is timed over the model's own weights of that shape in turn (more than the caches hold), as a forward meets
them: a model's weights do not fit in the processor's caches, so a product timed on one hot weight
measures arithmetic, while a forward is paced by streaming weights from memory, and the two can
disagree about which product is faster.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from selfspec.engine.devices import model_dtype_name
from selfspec.engine.kernels import KernelChoice, choose_fastest
from selfspec.engine.narrow_linear import (RowChosenLinear, onednn_available, onednn_linear, thread_split_linear,
                                           weight_major_linear)
from selfspec.engine.shadow import linear_slots, shadow_copy

# One decoding row, then verification widths K+1 and copies (up to 16 and the pending token), grouped so
# the choices stay few; each is timed at its widest row count.
ROW_BUCKETS = ((1, 1), (2, 3), (4, 5), (6, 9), (10, 13), (14, 17))
INCUMBENT = "linear"  # torch's own product; any other must beat it by WIN_MARGIN
PRODUCTS = {INCUMBENT: F.linear, "weight-major": weight_major_linear, "onednn": onednn_linear,  # same arguments
            "thread-split": thread_split_linear}
WIN_MARGIN = 0.1  # another product must be >10% faster to replace torch's own
LARGE_GROUP_BYTES = 16 << 20  # weight groups this large are timed in one round, not two
STREAM_BYTES = 64 << 20  # a shape is timed over this much of its weights: more than a processor's caches hold
WARM_UP_ROWS = 2048  # a product's warm-up runs over this many output rows of one weight

Shape = tuple[int, int]  # a weight's (out, in)
Bucket = tuple[int, int]  # rows (low, high)


@dataclass(frozen=True)
class RowProducts:
    """The product each weight shape uses per row bucket, where it is not torch's `linear`."""

    chosen: dict[Bucket, dict[Shape, str]]  # row bucket -> {shape: product name in PRODUCTS}
    choices: tuple[KernelChoice, ...] = ()

    @staticmethod
    def plain() -> "RowProducts":
        return RowProducts({})

    def products_for(self, shape: Shape) -> dict[int, str]:
        """Row count -> the product a weight of this shape uses there (absent: `linear`)."""
        return {r: names[shape] for (low, high), names in self.chosen.items() if shape in names
                for r in range(low, high + 1)}

    def tuned(self, model: nn.Module) -> nn.Module:
        """What full-model forwards run: `model` itself when every product is torch's own, else a shadow
        of it (same tensors) whose linear layers of the chosen shapes use their chosen products."""
        if not any(self.chosen.values()):
            return model
        shadow = shadow_copy(model)
        for parent, name, linear in linear_slots(shadow):
            products = self.products_for(tuple(linear.weight.shape))
            if products:
                setattr(parent, name, RowChosenLinear(linear, {r: PRODUCTS[p] for r, p in products.items()}))
        return shadow

    def to_dict(self) -> dict:
        return {"chosen": {f"rows {_rows(lo, hi)}": {f"{o}x{i}": p for (o, i), p in sorted(names.items())}
                           for (lo, hi), names in self.chosen.items() if names},
                "choices": [c.to_dict() for c in self.choices]}

    def summary(self) -> str:
        """One line for `bench` output, e.g. 'rows 1: linear; rows 2-3: weight-major for 49152x576; ...'."""
        return RowProducts.summary_of(self.to_dict())

    @staticmethod
    def summary_of(described: dict) -> str:
        """`summary()` from `to_dict()`'s output (as reports carry it)."""
        parts = []
        for low, high in ROW_BUCKETS:
            by_product: dict[str, list[str]] = {}
            for shape, product in described["chosen"].get(f"rows {_rows(low, high)}", {}).items():
                by_product.setdefault(product, []).append(shape)
            parts.append(f"rows {_rows(low, high)}: " + (", ".join(f"{p} for {', '.join(shapes)}"
                                                                   for p, shapes in by_product.items()) or INCUMBENT))
        return "; ".join(parts)


def _rows(low: int, high: int) -> str:
    return str(low) if low == high else f"{low}-{high}"


def linear_weights(model: nn.Module) -> dict[tuple[int, int], list[torch.Tensor]]:
    """The model's linear weights (lm_head included), grouped by (out, in) shape, each once."""
    weights: dict[tuple[int, int], list[torch.Tensor]] = {}
    seen = set()
    for module in model.modules():
        if isinstance(module, nn.Linear) and id(module.weight) not in seen:
            seen.add(id(module.weight))
            weights.setdefault(tuple(module.weight.shape), []).append(module.weight)
    return weights


def streamed(weights: list[torch.Tensor]) -> list[torch.Tensor]:
    """The first weights of a group that together pass STREAM_BYTES (all of them if they do not); a
    single weight larger than that (a head) is timed over its first rows: the same product, fewer bytes."""
    taken, total = [], 0
    for w in weights:
        if total >= STREAM_BYTES:
            break
        row_bytes = w.shape[1] * w.element_size()
        rows = min(w.shape[0], -(-(STREAM_BYTES - total) // row_bytes))
        taken.append(w if rows == w.shape[0] or len(weights) > 1 else w[:rows])
        total += taken[-1].numel() * w.element_size()
    return taken


def candidate_products(device: torch.device) -> dict:
    """The products this build can run on this device (oneDNN's only on CPUs of builds that have it)."""
    return {name: product for name, product in PRODUCTS.items() if name != "onednn" or onednn_available(device)}


def _candidates(weights: list[torch.Tensor], rows: int) -> tuple[dict, dict]:
    """Each product applied to every weight of the group in turn, as one forward would; and its warm-up,
    the same product on the first rows of the group's first weight (its code path, without the bytes)."""
    x = torch.randn(1, rows, weights[0].shape[1], dtype=weights[0].dtype, device=weights[0].device)
    products = candidate_products(weights[0].device)
    return ({name: (lambda product=product: [product(x, w) for w in weights]) for name, product in products.items()},
            {name: (lambda product=product: product(x, weights[0][:WARM_UP_ROWS])) for name, product in products.items()})


@torch.inference_mode()
def choose_row_products(model: nn.Module) -> RowProducts:
    """Time the candidate products for each weight shape and row bucket; keep the fastest."""
    device = model.get_input_embeddings().weight.device
    dtype = model_dtype_name(model)
    names = "+".join(candidate_products(device))  # in the cache key: a new candidate is timed, not skipped
    chosen: dict[Bucket, dict[Shape, str]] = {bucket: {} for bucket in ROW_BUCKETS}
    choices = []
    for shape, group in linear_weights(model).items():
        weights = streamed(group)
        large = sum(w.numel() * w.element_size() for w in weights) > LARGE_GROUP_BYTES
        for low, high in ROW_BUCKETS:
            candidates, warm_ups = _candidates(weights, high)
            choice = choose_fastest(f"row-linear:{dtype}:{shape[0]}x{shape[1]}x{len(weights)}:rows{_rows(low, high)}"
                                    f":{names}", candidates, device, repeats=3, rounds=1 if large else 2,
                                    incumbent=INCUMBENT, margin=WIN_MARGIN, warm_ups=warm_ups)
            choices.append(choice)
            if choice.name != INCUMBENT:
                chosen[(low, high)][shape] = choice.name
    return RowProducts(chosen, tuple(choices))
