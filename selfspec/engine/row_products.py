"""Which product each of the model's linear layers uses over 1..17 rows, chosen by timing.

A decoding step runs the full model over one position, a verification over K+1 (2..9) or over copied
context tokens and drafts (up to 17). How fast
torch's `linear` is over so few rows depends on the machine: on one CPU the weight-major product
(narrow_linear.py) is much faster, even for one row padded to two (torch's one-row path may use a
single core), on another it is slower (figures in docs/BENCHMARKS.md). So at load the engine times
both, per weight shape and per row bucket, at the model's own weights and dtype, and every
full-model forward of a few rows uses the faster one (kernels.py caches the choice per machine).

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
from selfspec.engine.narrow_linear import WeightMajorLinear, weight_major_linear
from selfspec.engine.shadow import linear_slots, shadow_copy

# One decoding row, then verification widths K+1 and copies (up to 16 and the pending token), grouped so
# the choices stay few; each is timed at its widest row count.
ROW_BUCKETS = ((1, 1), (2, 3), (4, 5), (6, 9), (10, 13), (14, 17))
PRODUCTS = {"linear": F.linear, "weight-major": weight_major_linear}  # the candidates, same arguments
WIN_MARGIN = 0.1  # weight-major must be >10% faster to replace torch's own product
LARGE_GROUP_BYTES = 16 << 20  # weight groups this large are timed with fewer repetitions: ~2 s in all
STREAM_BYTES = 64 << 20  # a shape is timed over this much of its weights: more than a processor's caches hold


@dataclass(frozen=True)
class RowProducts:
    """The weight shapes that use the weight-major product, per row bucket; every other product is `linear`."""

    weight_major: dict[tuple[int, int], frozenset[tuple[int, int]]]  # row bucket -> (out, in) shapes
    choices: tuple[KernelChoice, ...] = ()

    @staticmethod
    def plain() -> "RowProducts":
        return RowProducts({})

    def rows_for(self, shape: tuple[int, int]) -> frozenset[int]:
        """The row counts at which a weight of this shape is multiplied weight-major."""
        return frozenset(r for (low, high), shapes in self.weight_major.items() if shape in shapes
                         for r in range(low, high + 1))

    def tuned(self, model: nn.Module) -> nn.Module:
        """What full-model forwards run: `model` itself when every product is torch's own, else a shadow
        of it (same tensors) whose linear layers of the chosen shapes use the weight-major product."""
        if not any(self.weight_major.values()):
            return model
        shadow = shadow_copy(model)
        for parent, name, linear in linear_slots(shadow):
            rows = self.rows_for(tuple(linear.weight.shape))
            if rows:
                setattr(parent, name, WeightMajorLinear(linear, rows))
        return shadow

    def to_dict(self) -> dict:
        return {"weight_major": {f"rows {_rows(lo, hi)}": sorted(f"{o}x{i}" for o, i in shapes)
                                 for (lo, hi), shapes in self.weight_major.items() if shapes},
                "choices": [c.to_dict() for c in self.choices]}

    def summary(self) -> str:
        """One line for `bench` output, e.g. 'rows 1: linear; rows 2-3: weight-major for 49152x576; ...'."""
        return RowProducts.summary_of(self.to_dict())

    @staticmethod
    def summary_of(described: dict) -> str:
        """`summary()` from `to_dict()`'s output (as reports carry it)."""
        chosen = described["weight_major"]
        return "; ".join(f"rows {_rows(lo, hi)}: " + (f"weight-major for {', '.join(chosen[f'rows {_rows(lo, hi)}'])}"
                                                       if f"rows {_rows(lo, hi)}" in chosen else "linear")
                         for lo, hi in ROW_BUCKETS)


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
    """The first weights of a group that together pass STREAM_BYTES (all of them if they do not)."""
    taken, total = [], 0
    for w in weights:
        if total >= STREAM_BYTES:
            break
        taken.append(w)
        total += w.numel() * w.element_size()
    return taken


def _candidates(weights: list[torch.Tensor], rows: int) -> dict:
    """Each product applied to every weight of the group in turn, as one forward would."""
    x = torch.randn(1, rows, weights[0].shape[1], dtype=weights[0].dtype, device=weights[0].device)
    return {name: (lambda product=product: [product(x, w) for w in weights]) for name, product in PRODUCTS.items()}


@torch.inference_mode()
def choose_row_products(model: nn.Module) -> RowProducts:
    """Time `linear` against weight-major for each weight shape and row bucket; keep the faster."""
    device = model.get_input_embeddings().weight.device
    dtype = model_dtype_name(model)
    chosen: dict[tuple[int, int], set] = {bucket: set() for bucket in ROW_BUCKETS}
    choices = []
    for shape, group in linear_weights(model).items():
        weights = streamed(group)
        large = sum(w.numel() * w.element_size() for w in weights) > LARGE_GROUP_BYTES
        for low, high in ROW_BUCKETS:
            choice = choose_fastest(f"row-linear:{dtype}:{shape[0]}x{shape[1]}x{len(weights)}:rows{_rows(low, high)}",
                                    _candidates(weights, high), device, repeats=3 if large else 5,
                                    rounds=1 if large else 2, incumbent="linear", margin=WIN_MARGIN)
            choices.append(choice)
            if choice.name == "weight-major":
                chosen[(low, high)].add(shape)
    return RowProducts({b: frozenset(s) for b, s in chosen.items()}, tuple(choices))
