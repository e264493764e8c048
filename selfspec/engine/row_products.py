"""Which product each of the model's linear layers uses over 1..17 rows and over a prompt, chosen by timing.

A decoding step runs the full model over one position, a verification over K+1 (2..9) or over copied context tokens
and drafts (up to 17), a prefill over the whole prompt. How fast torch's `linear` is over so few rows depends on the
machine: on one CPU the weight-major product (narrow_linear.py) is much faster, even for one row padded to two
(torch's one-row path may use a single core), and oneDNN's matmul on packed copies of the weights faster still over
6-17 rows (the copies cost the weights' bytes again, so they are offered only where they fit), and in bfloat16 on
CPUs with AVX512-BF16 a pair-dot product of our own over another copy (a microsecond a call where oneDNN's costs
~10, and each row summed alike whatever rows share the call); on another plain `linear` wins (figures in
docs/BENCHMARKS.md). So at load the engine times the candidates, per weight shape and per row bucket, at the model's
own weights and dtype, and every full-model forward of a few rows uses the fastest (kernels.py caches the choice per
machine). Over a prompt's many rows the products are compute-bound, and which BLAS torch's `linear` reaches matters:
on one CPU oneDNN's product ran 2-3x faster there too, so prefills get a choice of their own among the products made
for many rows. Projections that read the same input (a layer's q/k/v, its gate/up) may also run as one product over
a packed copy of their stacked weights (`JoinedLinear`): one call and one pass where there were several, timed like
the rest.

Each candidate is timed over the model's own weights of that shape in turn (more than the caches hold), as a forward meets
them: a model's weights do not fit in the processor's caches, so a product timed on one hot weight
measures arithmetic, while a forward is paced by streaming weights from memory, and the two can
disagree about which product is faster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Iterable

import torch
from torch import nn
from torch.nn import functional as F

from selfspec.engine.architectures import (PROJECTION_GROUPS, decoder_layers, join_projections, stacked_linear,
                                           walkable_plain_layers)
from selfspec.engine.attention_forms import exact_rows_required
from selfspec.engine.devices import model_dtype_name
from selfspec.engine.host import available_memory, free_device_memory
from selfspec.engine.kernels import KernelChoice, cached_choice, choose_fastest, remember_choice
from selfspec.engine.narrow_linear import (PACKED_FOR_ROWS, JoinedLinear, RowChosenLinear, bf16_pairs_available,
                                           bf16_pairs_fit, bf16_pairs_linear, bf16_pairs_packed, onednn_available,
                                           onednn_linear, onednn_packed, onednn_packing_available,
                                           onednn_two_rows_linear, thread_split_linear, weight_major_linear)
from selfspec.engine.shadow import linear_slots, shadow_copy

# One decoding row, then verification widths K+1 and copies (up to 16 and the pending token), grouped so
# the choices stay few; each is timed at its widest row count.
ROW_BUCKETS = ((1, 1), (2, 3), (4, 5), (6, 9), (10, 13), (14, 17))
PREFILL_BUCKET = (ROW_BUCKETS[-1][1] + 1, None)  # every row count past them: a prompt's prefill
PREFILL_TIMED_ROWS = 32  # a short prompt: the products' gain over `linear` only grows with the rows
PREFILL_PRODUCTS = ("linear", "onednn", "onednn-packed", "bf16-pairs")  # the candidates made for many rows
INCUMBENT = "linear"  # torch's own product; any other must beat it by WIN_MARGIN
PRODUCTS = {INCUMBENT: F.linear, "weight-major": weight_major_linear, "onednn": onednn_linear,  # same arguments
            "thread-split": thread_split_linear, "onednn-packed": onednn_linear, "bf16-pairs": bf16_pairs_linear}
# Products that read a copy of the weight, made once per layer.
PREPARED = {"onednn-packed": onednn_packed, "bf16-pairs": bf16_pairs_packed}
# Variants offered only to make a shape's products exact by rows (`_exact_rows`), never timed: for one row, what
# the product gives it among others.
ONE_ROW_AS_TWO = {"onednn-packed": "onednn-packed, one row as two"}
PRODUCTS[ONE_ROW_AS_TWO["onednn-packed"]] = onednn_two_rows_linear
PREPARED[ONE_ROW_AS_TWO["onednn-packed"]] = onednn_packed
PACKED_MEMORY_SHARE = 0.5  # packed copies only while the model's linear weights are at most this share of free memory
# Another product must be this much faster to replace torch's own. Small: in a real verification a product
# that timed a few percent ahead can be far ahead (bf16 on a Zen 5: `linear` over 192x576 weights timed 4-10%
# behind oneDNN's packed product and ran 35 against ~20 us per call inside verifications: docs/BENCHMARKS.md).
WIN_MARGIN = 0.02
LARGE_GROUP_BYTES = 16 << 20  # weight groups this large are timed in one round, not two
STREAM_BYTES = 64 << 20  # a shape is timed over this much of its weights: more than a processor's caches hold
STREAM_CACHES = 4  # ...and on an accelerator over at least this many times its last-level cache (an H200's is 60 MB)
WARM_UP_ROWS = 2048  # a product's warm-up runs over this many output rows of one weight

Shape = tuple[int, int]  # a weight's (out, in)
Bucket = tuple[int, int | None]  # rows (low, high; None: every row count from low)

# A projection group (architectures.PROJECTION_GROUPS: q/k/v, gate/up) may run as one product over a copy of
# its stacked weights where that times faster than its parts with their own products: timed over a decoding
# step's one row, which decides that bucket, and a verification's nine (K = 8), which decides the rest. The
# product: the bfloat16 pair dot products where they are offered, else oneDNN's over a packed copy where this
# build has it, else torch's `linear` (a GPU's: one wide product keeps its kernels at the memory's pace where
# narrow ones need a split-K reduction each).
JOINED_PRODUCTS = ("bf16-pairs", "onednn-packed", INCUMBENT)  # the first of these that the candidates hold
PLAIN_JOINED_PRODUCT = "onednn-packed"  # what a RowProducts built by hand, or a report before bf16-pairs, joins with
JOIN_MARGIN = 0.1  # joining must win by this much: a near-tie in isolation was a loss inside one forward (fp32 q/k/v)
JOIN_DECISIONS: tuple[tuple[int, tuple[Bucket, ...]], ...] = (
    (1, ROW_BUCKETS[:1]), (PACKED_FOR_ROWS, ROW_BUCKETS[1:] + (PREFILL_BUCKET,)))


@dataclass(frozen=True)
class RowProducts:
    """The product each weight shape uses per row bucket, where it is not torch's `linear`, and the
    projection groups that run joined per row bucket."""

    chosen: dict[Bucket, dict[Shape, str]]  # row bucket (PREFILL_BUCKET too) -> {shape: product name in PRODUCTS}
    choices: tuple[KernelChoice, ...] = ()
    joined: dict[Bucket, tuple[str, ...]] = field(default_factory=dict)  # bucket -> joined names (PROJECTION_GROUPS)
    joined_product: str = PLAIN_JOINED_PRODUCT  # what joined groups run (JOINED_PRODUCTS)
    # Whether every product gives each of 1..17 rows what it gives that row alone (`exact_rows`): checked in
    # 16-bit dtypes on a CPU, where it makes a verification exactly the steps it stands for; None: not checked.
    rows_exact: bool | None = None

    @staticmethod
    def plain() -> "RowProducts":
        return RowProducts({})

    def products_for(self, shape: Shape, skip: frozenset[Bucket] = frozenset()) -> dict[int, str]:
        """Row count -> the product a weight of this shape uses there (absent: `linear`), prefills and the
        `skip` buckets aside."""
        return {r: names[shape] for (low, high), names in self.chosen.items()
                if shape in names and high and (low, high) not in skip for r in range(low, high + 1)}

    def prefill_product_for(self, shape: Shape, skip: frozenset[Bucket] = frozenset()) -> str | None:
        """The product a weight of this shape uses over PREFILL_BUCKET's rows (None: `linear`)."""
        return None if PREFILL_BUCKET in skip else self.chosen.get(PREFILL_BUCKET, {}).get(shape)

    def _names_for(self, shape: Shape, skip: frozenset[Bucket] = frozenset()) -> set[str]:
        return set(self.products_for(shape, skip).values()) | ({self.prefill_product_for(shape, skip)} - {None})

    def needs_copies(self, shape: Shape, skip: frozenset[Bucket] = frozenset()) -> bool:
        """Whether a weight of this shape reads a prepared copy of itself over any row bucket but `skip`'s."""
        return self.copies(shape, skip) > 0

    def copies(self, shape: Shape, skip: frozenset[Bucket] = frozenset()) -> int:
        """How many prepared copies of itself a weight of this shape holds (one per preparation its products read,
        e.g. the pair dot products' for decoding and oneDNN's for prompts), over the row buckets but `skip`'s."""
        return len({PREPARED[name] for name in self._names_for(shape, skip) if name in PREPARED})

    def joined_buckets(self, group: str) -> frozenset[Bucket]:
        """The row buckets over which projection group `group` runs as one product."""
        return frozenset(bucket for bucket, groups in self.joined.items() if group in groups)

    def tuned(self, model: nn.Module) -> nn.Module:
        """What full-model forwards run: `model` itself when every product is torch's own, else a shadow
        of it (same tensors, plus the copies prepared products read) whose linear layers of the chosen
        shapes use their chosen products, and whose joined projection groups are one `JoinedLinear` each."""
        if not any(self.chosen.values()) and not any(self.joined.values()):
            return model
        shadow = shadow_copy(model)
        for _, group, _ in PROJECTION_GROUPS:
            if buckets := self.joined_buckets(group):
                for layer in decoder_layers(shadow):
                    join_projections(layer, partial(self._joined, buckets=buckets), (group,))
        for parent, name, linear in linear_slots(shadow):
            stand_in = self._stand_in(linear)
            if stand_in is not linear:
                setattr(parent, name, stand_in)
        return shadow

    def _stand_in(self, linear: nn.Linear, skip: frozenset[Bucket] = frozenset()) -> nn.Module:
        """`linear` with the products chosen for its shape outside the `skip` buckets (itself if none)."""
        shape = tuple(linear.weight.shape)
        products, prefill = self.products_for(shape, skip), self.prefill_product_for(shape, skip)
        if not products and not prefill:
            return linear
        copies = _prepared_copies(linear.weight, self._names_for(shape, skip))
        return RowChosenLinear(linear, {r: PRODUCTS[p] for r, p in products.items()},
                               {r: copies[p] for r, p in products.items() if p in copies},
                               prefill=prefill and (PREFILL_BUCKET[0], PRODUCTS[prefill], copies.get(prefill, linear.weight)))

    def _joined(self, parts: list[nn.Linear], buckets: frozenset[Bucket]) -> JoinedLinear:
        """A projection group as one product over a packed copy of its stacked weights in `buckets`, as its
        parts with their own products elsewhere."""
        stacked = stacked_linear(parts)
        rows = frozenset(r for low, high in buckets if high for r in range(low, high + 1))
        return JoinedLinear(stacked, tuple(p.out_features for p in parts), PRODUCTS[self.joined_product],
                            _prepare(self.joined_product, stacked.weight), rows,
                            PREFILL_BUCKET[0] if PREFILL_BUCKET in buckets else None,
                            tuple(self._stand_in(part, buckets) for part in parts))

    def extra_bytes(self, model: nn.Module) -> int:
        """Memory the prepared copies of `tuned(model)` hold beside the model: a packed weight has its bytes,
        a joined group's packed copy its parts' (and a part may hold copies of its own for other rows)."""
        joined = {id(part.weight): buckets for _, group, _ in PROJECTION_GROUPS
                  if (buckets := self.joined_buckets(group)) for parts in _group_parts(model, group) for part in parts}
        total = 0
        for shape, group in linear_weights(model).items():
            for w in group:
                skip = joined.get(id(w), frozenset())
                total += _bytes([w]) * (bool(skip) + self.copies(shape, skip))
        return total

    def to_dict(self) -> dict:
        return {"chosen": {f"rows {_rows(lo, hi)}": {f"{o}x{i}": p for (o, i), p in sorted(names.items())}
                           for (lo, hi), names in self.chosen.items() if names},
                "joined": {f"rows {_rows(lo, hi)}": list(groups) for (lo, hi), groups in self.joined.items() if groups},
                "joined_product": self.joined_product,
                "rows_exact": self.rows_exact,
                "choices": [c.to_dict() for c in self.choices]}

    def summary(self) -> str:
        """One line for `bench` output, e.g. 'rows 1: linear; rows 2-3: weight-major for 49152x576; ... rows 18+: ...'."""
        return RowProducts.summary_of(self.to_dict())

    @staticmethod
    def summary_of(described: dict) -> str:
        """`summary()` from `to_dict()`'s output (as reports carry it)."""
        parts = []
        for low, high in ROW_BUCKETS + (PREFILL_BUCKET,):
            by_product: dict[str, list[str]] = {}
            for shape, product in described["chosen"].get(f"rows {_rows(low, high)}", {}).items():
                by_product.setdefault(product, []).append(shape)
            parts.append(f"rows {_rows(low, high)}: " + (", ".join(f"{p} for {', '.join(shapes)}"
                                                                   for p, shapes in by_product.items()) or INCUMBENT))
        by_group: dict[str, list[str]] = {}
        for rows, groups in described.get("joined", {}).items():
            for group in groups:
                by_group.setdefault(group, []).append(rows)
        every = [f"rows {_rows(low, high)}" for low, high in ROW_BUCKETS + (PREFILL_BUCKET,)]
        if by_group:
            product = described.get("joined_product", PLAIN_JOINED_PRODUCT)
            parts.append(f"joined into one {product} product: " + ", ".join(
                f"{group} over {'every row count' if sorted(rows) == sorted(every) else ', '.join(rows)}"
                for group, rows in by_group.items()))
        return "; ".join(parts)


def _group_parts(model: nn.Module, joined: str) -> list[list[nn.Module]]:
    """Per decoder layer, the parts of the projection group named `joined`, in order."""
    (owner, parts), = [(o, p) for o, j, p in PROJECTION_GROUPS if j == joined]
    return [[getattr(getattr(layer, owner), name) for name in parts] for layer in decoder_layers(model)]


def _rows(low: int, high: int | None) -> str:
    return f"{low}+" if high is None else str(low) if low == high else f"{low}-{high}"


def _bytes(weights: list[torch.Tensor]) -> int:
    return sum(w.numel() * w.element_size() for w in weights)


def linear_weights(model: nn.Module) -> dict[tuple[int, int], list[torch.Tensor]]:
    """The model's linear weights (lm_head included), grouped by (out, in) shape, each once."""
    weights: dict[tuple[int, int], list[torch.Tensor]] = {}
    seen = set()
    for module in model.modules():
        if isinstance(module, nn.Linear) and id(module.weight) not in seen:
            seen.add(id(module.weight))
            weights.setdefault(tuple(module.weight.shape), []).append(module.weight)
    return weights


def device_cache_bytes(device: torch.device) -> int:
    """An accelerator's last-level cache (0 for the CPU, whose caches STREAM_BYTES already passes)."""
    return torch.cuda.get_device_properties(device).L2_cache_size if device.type == "cuda" else 0


def stream_bytes(device: torch.device) -> int:
    """How many bytes of a group's weights a product is timed over on this device."""
    return max(STREAM_BYTES, STREAM_CACHES * device_cache_bytes(device))


def streamed(weights: list[torch.Tensor]) -> list[torch.Tensor]:
    """The first weights of a group that together pass stream_bytes (all of them if they do not); a
    single weight larger than that (a head) is timed over its first rows: the same product, fewer bytes."""
    taken, total, enough = [], 0, stream_bytes(weights[0].device)
    for w in weights:
        if total >= enough:
            break
        row_bytes = w.shape[1] * w.element_size()
        rows = min(w.shape[0], -(-(enough - total) // row_bytes))
        taken.append(w if rows == w.shape[0] or len(weights) > 1 else w[:rows])
        total += _bytes(taken[-1:])
    return taken


def candidate_products(device: torch.device, dtype: torch.dtype, packing: bool = True,
                       shapes: Iterable[Shape] = ()) -> dict:
    """The products this build can run on this device and dtype for weights of these `shapes` (oneDNN's only
    on CPUs of builds that have it; the bfloat16 pair dot products only where AVX512-BF16 is and every shape
    fits their blocks). With oneDNN's packed weights, its product on the plain layout is left out: the same
    kernel re-blocking W on every call, slower at every row count measured."""
    if packing and onednn_packing_available(device, dtype):
        left_out = {"onednn"}
    elif onednn_available(device):
        left_out = {"onednn-packed"}
    else:
        left_out = {"onednn", "onednn-packed"}
    if not (packing and bf16_pairs_available(device, dtype) and all(map(bf16_pairs_fit, shapes))):
        left_out.add("bf16-pairs")
    return {name: product for name, product in PRODUCTS.items()
            if name not in left_out and name not in ONE_ROW_AS_TWO.values()}


def packing_fits(model: nn.Module, copies: int = 1) -> bool:
    """Whether `copies` copies of every linear weight (packed, or stacked to be joined) fit the free memory of the
    model's device with room to spare."""
    device = model.get_input_embeddings().weight.device
    free = available_memory() if device.type == "cpu" else free_device_memory(device)
    return copies * sum(map(_bytes, linear_weights(model).values())) <= PACKED_MEMORY_SHARE * free


def prefill_candidates(products: dict, model: nn.Module) -> dict:
    """The products a prompt's rows may take: those made for many rows, less oneDNN's packed copy where the pair dot
    products are offered too and the two copies would not fit (a weight may decode on one and prefill on the other)."""
    prefill = {name: p for name, p in products.items() if name in PREFILL_PRODUCTS}
    if "bf16-pairs" in prefill and "onednn-packed" in prefill and not packing_fits(model, copies=2):
        del prefill["onednn-packed"]
    return prefill


def _prepared_copies(weight: torch.Tensor, names) -> dict[str, torch.Tensor]:
    """The copies of `weight` that products `names` read (those in PREPARED), one per preparation."""
    made: dict[Callable, torch.Tensor] = {}
    for prepare in {PREPARED[name] for name in names if name in PREPARED}:
        made[prepare] = prepare(weight)
    return {name: made[PREPARED[name]] for name in names if name in PREPARED}


def _prepare(name: str, weight: torch.Tensor) -> torch.Tensor:
    """What product `name` reads for `weight`: its prepared copy, or the weight itself."""
    return PREPARED[name](weight) if name in PREPARED else weight


def _prepared(weights: list[torch.Tensor], products: dict) -> Callable[[str], tuple[list[torch.Tensor], torch.Tensor]]:
    """name -> the weights that product reads for the group and for its warm-up (the first rows of the
    first weight: its code path, without the bytes): the weights themselves or their prepared copies,
    made on first use (a choice read from the cache prepares nothing)."""
    made: dict[str, tuple[list[torch.Tensor], torch.Tensor]] = {}

    def weights_for(name: str) -> tuple[list[torch.Tensor], torch.Tensor]:
        if name not in made:
            prepare = PREPARED.get(name, lambda w: w)
            made[name] = ([prepare(w) for w in weights], prepare(weights[0][:WARM_UP_ROWS]))
        return made[name]
    return weights_for


def _candidates(weights: list[torch.Tensor], weights_for: Callable, products: dict, rows: int) -> tuple[dict, dict]:
    """Each product applied to every weight of the group in turn, as one forward would; and its warm-up."""
    x = torch.randn(1, rows, weights[0].shape[1], dtype=weights[0].dtype, device=weights[0].device)
    return ({name: (lambda p=product, n=name: [p(x, w) for w in weights_for(n)[0]]) for name, product in products.items()},
            {name: (lambda p=product, n=name: p(x, weights_for(n)[1])) for name, product in products.items()})


@torch.inference_mode()
def choose_row_products(model: nn.Module) -> RowProducts:
    """Time the candidate products for each weight shape and row bucket; keep the fastest. Then time each
    projection group joined against its parts (JOIN_DECISIONS)."""
    probe = model.get_input_embeddings().weight
    device, dtype = probe.device, model_dtype_name(model)
    copies_fit = packing_fits(model)
    products = candidate_products(device, probe.dtype, packing=copies_fit, shapes=linear_weights(model))
    chosen: dict[Bucket, dict[Shape, str]] = {bucket: {} for bucket in ROW_BUCKETS + (PREFILL_BUCKET,)}
    choices = []
    decoding_ms: dict[tuple[Shape, str], float] = {}  # (shape, product) -> ms summed over the decoding buckets
    prefill_products = prefill_candidates(products, model)
    for shape, group in linear_weights(model).items():
        weights = streamed(group)
        large = _bytes(weights) > LARGE_GROUP_BYTES
        weights_for = _prepared(weights, products)
        for low, high in ROW_BUCKETS + (PREFILL_BUCKET,):
            candidates, warm_ups = (_candidates(weights, weights_for, products, high) if high else
                                    _candidates(weights, weights_for, prefill_products, PREFILL_TIMED_ROWS))
            choice = choose_fastest(f"row-linear:{dtype}:{shape[0]}x{shape[1]}x{len(weights)}:rows{_rows(low, high)}"
                                    f":{'+'.join(candidates)}:margin{WIN_MARGIN}", candidates, device, repeats=3, rounds=1 if large else 2,
                                    incumbent=INCUMBENT, margin=WIN_MARGIN, warm_ups=warm_ups)
            choices.append(choice)
            if choice.name != INCUMBENT:
                chosen[(low, high)][shape] = choice.name
            for name, ms in choice.milliseconds.items() if high else ():
                decoding_ms[(shape, name)] = decoding_ms.get((shape, name), 0.0) + ms
    join_product = next(name for name in JOINED_PRODUCTS if name in products)
    joined, join_choices = (_chosen_joins(model, chosen, dtype, device, join_product)
                            if copies_fit and walkable_plain_layers(model) else ({}, []))
    exact = None
    if device.type == "cpu" and exact_rows_required(probe.dtype):
        exact = _exact_rows(model, chosen, joined, products, join_product, decoding_ms)
    return RowProducts(chosen, tuple(choices + join_choices), joined, join_product, exact)


# Where verifications can commit exactly what steps one by one would (attention_forms.py: the "rows" form): the
# products must give each row what they give it alone. oneDNN's bfloat16 product over 576x1536 weights gave one
# row alone other sums than the same row among others (a one-row kernel splits its long sums), so it is checked.
DECODE_BUCKETS = ROW_BUCKETS  # the row counts of steps, verifications and reads of copies (a prompt's aside)
EXACTNESS_ROWS = 48  # random rows each product is checked over


def rows_agree(product_for: Callable[[int], Callable[[torch.Tensor], torch.Tensor]], x: torch.Tensor,
               widest: int) -> bool:
    """Whether `product_for(r)`, the product over r rows, gives every row of `x` (rows, in), taken r at a time, for
    each r up to `widest`, exactly what `product_for(1)` gives that row alone. Two orders of summing round alike
    for most rows, so the more rows, the surer the answer (one product differed on 3 rows in 68)."""
    alone = torch.cat([product_for(1)(x[None, j:j + 1])[0] for j in range(len(x))])
    return all(torch.equal(product_for(r)(x[None, s:s + r])[0], alone[s:s + r])
               for r in range(2, widest + 1) for s in range(0, len(x) - r + 1, r))


def remembered_agreement(key: str, device: torch.device, check: Callable[[], bool]) -> bool:
    """`check()`, remembered on disk under `key` like a timed choice (kernels.py): whether a product sums rows
    alike is a property of the machine's kernels, so a later load of the same shapes checks nothing."""
    cached = cached_choice(key, device)
    if cached is not None and cached.name in ("exact", "inexact"):
        return cached.name == "exact"
    agree = check()
    remember_choice(KernelChoice(key, "exact" if agree else "inexact"), device)
    return agree


def _exact_rows(model: nn.Module, chosen: dict[Bucket, dict[Shape, str]], joined: dict[Bucket, tuple[str, ...]],
                products: dict, join_product: str, timed: dict[tuple[Shape, str], float]) -> bool:
    """Make the decoding buckets' products exact by rows (`rows_agree`), in place, and say whether they are.

    A projection group joined over some decoding buckets runs joined over all of them where its joined product
    is exact, else over none of them (nor over prompts: its parts would hold copies twice). A shape whose chosen
    products are not exact takes the fastest candidate that is (by `timed`: (shape, product) -> milliseconds over
    the decoding buckets), over every decoding bucket. False where a shape has no exact candidate."""
    widest = DECODE_BUCKETS[-1][1]
    generator = torch.Generator().manual_seed(0)

    def inputs(width: int, dtype: torch.dtype) -> torch.Tensor:
        return torch.randn(EXACTNESS_ROWS, width, generator=generator).to(dtype)

    def exact_by_rows(weight: torch.Tensor, names: dict[int, str] | str, made: dict) -> bool:
        """Whether the products `names` gives each row count (one name: every count) are exact by rows over
        `weight` (or the copy a product reads, each made once, in `made`, per weight)."""
        def product(rows: int) -> Callable:
            name = names if isinstance(names, str) else names[rows]
            prepare = PREPARED.get(name)
            if prepare is not None and prepare not in made:
                made[prepare] = prepare(weight)
            return partial(PRODUCTS[name], weight=weight if prepare is None else made[prepare])
        per_rows = names if isinstance(names, str) else ",".join(names[r] for r in range(1, widest + 1))
        key = f"rows-exact:{model_dtype_name(model)}:{weight.shape[0]}x{weight.shape[1]}:{per_rows}:rows{EXACTNESS_ROWS}"
        return remembered_agreement(key, weight.device,
                                    lambda: rows_agree(product, inputs(weight.shape[1], weight.dtype), widest))

    fully_joined = set()
    for _, group, _ in PROJECTION_GROUPS:
        buckets = {b for b in DECODE_BUCKETS if group in joined.get(b, ())}
        if not buckets:
            continue
        parts = _group_parts(model, group)[0]
        stacked = stacked_linear(parts).weight
        if exact_by_rows(stacked, join_product, {}):
            joined |= {b: joined.get(b, ()) + (group,) for b in DECODE_BUCKETS if b not in buckets}
            fully_joined |= {id(part.weight) for parts in _group_parts(model, group) for part in parts}
        else:
            joined |= {b: tuple(g for g in groups if g != group) for b, groups in joined.items()}
    exact = True
    for shape, group in linear_weights(model).items():
        if all(id(w) in fully_joined for w in group):
            continue  # decoding runs these only joined
        weight, made = group[0], {}
        current = {r: chosen[b].get(shape, INCUMBENT) for b in DECODE_BUCKETS for r in range(b[0], b[1] + 1)}
        if exact_by_rows(weight, current, made):
            continue
        one_row = ONE_ROW_AS_TWO.get(current[1])
        if one_row is not None and exact_by_rows(weight, current | {1: one_row}, made):
            chosen[DECODE_BUCKETS[0]][shape] = one_row
            continue
        name = next((n for n in sorted(products, key=lambda n: timed.get((shape, n), math.inf))
                     if exact_by_rows(weight, n, made)), None)
        if name is None:
            exact = False
            continue
        for bucket in DECODE_BUCKETS:
            chosen[bucket].pop(shape, None)
            if name != INCUMBENT:
                chosen[bucket][shape] = name
    return exact


def _chosen_joins(model: nn.Module, chosen: dict[Bucket, dict[Shape, str]], dtype: str, device: torch.device,
                  product: str) -> tuple[dict[Bucket, tuple[str, ...]], list[KernelChoice]]:
    """The row buckets over which each projection group runs joined (JOIN_DECISIONS), and the choices timed."""
    separate = RowProducts(chosen)
    joined: dict[Bucket, tuple[str, ...]] = {}
    choices = []
    for _, group, _ in PROJECTION_GROUPS:
        won = set()
        for rows, buckets in JOIN_DECISIONS:
            choices.append(_join_choice(model, group, chosen, dtype, device, rows, product))
            won |= set(buckets) if choices[-1].name == "joined" else set()
        # Joined over some rows while its parts keep copies of their own for others, a group would hold its
        # weights twice over: not for one product fewer.
        shapes = {tuple(part.weight.shape) for part in _group_parts(model, group)[0]}
        if won and not any(separate.needs_copies(shape, frozenset(won)) for shape in shapes):
            joined |= {bucket: joined.get(bucket, ()) + (group,) for bucket in ROW_BUCKETS + (PREFILL_BUCKET,)
                       if bucket in won}
    return joined, choices


def _join_choice(model: nn.Module, group: str, chosen: dict[Bucket, dict[Shape, str]], dtype: str,
                 device: torch.device, rows: int, product: str) -> KernelChoice:
    """Whether projection group `group` runs faster over `rows` rows joined (one `product` over a copy of its
    stacked weights) than as its parts, each with the product chosen for its shape: timed over a stream's
    worth of its layers in turn."""
    layers, total, enough = [], 0, stream_bytes(device)
    for parts in _group_parts(model, group):
        if total >= enough:
            break
        layers.append(parts)
        total += _bytes([p.weight for p in parts])
    x = torch.randn(1, rows, layers[0][0].in_features, dtype=layers[0][0].weight.dtype, device=device)
    bucket = next(b for b in ROW_BUCKETS if b[0] <= rows <= b[1])

    def separate_calls():
        calls = []
        for parts in layers:
            for part in parts:
                name = chosen[bucket].get(tuple(part.weight.shape), INCUMBENT)
                calls.append((PRODUCTS[name], _prepare(name, part.weight), part.bias))
        return calls

    def joined_calls():
        stacks = map(stacked_linear, layers)
        return [(PRODUCTS[product], _prepare(product, s.weight), s.bias) for s in stacks]

    made = {}  # the calls, with their copies, made on first use (a cached choice makes none)

    def run(name: str, make) -> list[torch.Tensor]:
        if name not in made:
            made[name] = make()
        return [product(x, weight, bias) for product, weight, bias in made[name]]

    shapes = "+".join(f"{p.weight.shape[0]}x{p.weight.shape[1]}" for p in layers[0])
    separate = "+".join(chosen[bucket].get(tuple(p.weight.shape), INCUMBENT) for p in layers[0])
    return choose_fastest(f"joined-linear:{dtype}:{group}:{shapes}x{len(layers)}:rows{rows}:{separate}:{product}"
                          f":margin{JOIN_MARGIN}",
                          {"separate": lambda: run("separate", separate_calls),
                           "joined": lambda: run("joined", joined_calls)},
                          device, repeats=3, rounds=2, incumbent="separate", margin=JOIN_MARGIN)
