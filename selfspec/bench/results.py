"""The benchmark's table rows: per method and category, what the runs measured (via engine/metrics.py)
and what the cost model allows (via costmodel.py), twice over.

- The isolated cost model: c and v from single forwards timed apart (costmodel.measure_costs), a from
  the run; bound = E/(K*c+v) and efficiency = speedup / bound.
- The in-run cost model: c and v as the decoder itself paid them, in units of this run's autoregressive
  decode time per token, prefill excluded on both sides. These are interleaved with the baseline, so
  load that comes and goes on a shared machine does not skew them; and since the bound counts only the
  forward passes while the decode speedup counts the whole loop, efficiency_in_run is exactly the share
  the loop keeps of what its forwards allow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from selfspec.bench.costmodel import Costs, bound_for_lengths
from selfspec.engine.metrics import DecodeMetrics, acceptance_per_token, decode_metrics
from selfspec.engine.records import StepRecord

AR = "autoregressive"


@dataclass
class Run:
    """One method on one prompt: the median time over repetitions and what it produced."""

    tokens: list[int]
    seconds: float
    records: list[StepRecord] | None = None  # our decoders only (the last repetition's)
    repetitions: tuple[float, ...] = ()  # each repetition's seconds, in order (empty: only the median is known)


@dataclass
class Row:
    method: str
    category: str
    prompts: int
    new_tokens: int
    seconds: float
    tokens_per_second: float
    speedup: float | None
    identical: bool
    # The lowest and highest speedup of any one repetition over the same prompts (repetition r of every prompt
    # against repetition r of our autoregressive loop): how far one run of the bench can stray from the median.
    speedup_low: float | None = None
    speedup_high: float | None = None
    acceptance: float | None = None  # accepted / drafted
    mean_accepted_tokens: float | None = None  # tokens committed per verification
    mean_drafted: float | None = None  # tokens drafted per verification
    plain_steps: int | None = None  # one-token full-model steps after the prefill (the controller's choice)
    copied_share: float | None = None  # of the drafted tokens, the share copied from the context
    copy_acceptance: float | None = None  # per source: copied tokens kept / copied
    draft_acceptance: float | None = None  # model-drafted tokens kept / model-drafted
    draft_extra_bytes: int | None = None  # memory the draft adds to the model's (low-bit weights)
    draft_seconds_per_token: float | None = None  # as the loop paid it
    verify_seconds_per_step: float | None = None  # as the loop paid it
    a: float | None = None  # per-token acceptance (the cost model's)
    c: float | None = None  # isolated cost model
    v: float | None = None  # for the method's max draft length K
    bound: float | None = None
    efficiency: float | None = None
    c_in_run: float | None = None  # in-run cost model
    v_in_run: float | None = None
    decode_speedup: float | None = None  # decode time per token, prefill left out, vs autoregressive
    bound_in_run: float | None = None
    efficiency_in_run: float | None = None


def summarize_runs(methods: Sequence, categories: Sequence[str], runs: dict[str, list[Run]],
                   costs: dict[tuple[str, str], Costs]) -> list[Row]:
    """One row per method and category (and "all"), speedups against this run's autoregressive.

    `methods` need `name`, `draft` (None for non-speculative ones) and `settings`.
    """
    groups = {c: [i for i, cat in enumerate(categories) if cat == c] for c in dict.fromkeys(categories)}
    groups["all"] = list(range(len(categories)))
    rows = []
    for category, index in groups.items():
        base = _throughput(runs[AR], index)
        for method in methods:
            mine = [runs[method.name][i] for i in index]
            tps = _throughput(runs[method.name], index)
            row = Row(
                method=method.name, category=category, prompts=len(index),
                new_tokens=sum(len(r.tokens) for r in mine), seconds=sum(r.seconds for r in mine),
                tokens_per_second=tps, speedup=tps / base if base else None,
                identical=all(r.tokens == runs[AR][i].tokens for r, i in zip(mine, index)),
            )
            row.speedup_low, row.speedup_high = speedup_range(runs[AR], runs[method.name], index)
            if method.draft is not None:
                records = [r.records for r in mine]
                _add_speculation(row, decode_metrics(records), records, method.settings.max_draft,
                                 costs.get((method.name, category)))
                row.draft_extra_bytes = getattr(method.draft, "extra_bytes", None)
                _add_in_run_costs(row, decode_metrics(records), decode_metrics(runs[AR][i].records for i in index))
            rows.append(row)
    return rows


def speedup_range(baseline: list[Run], runs: list[Run], index: list[int]) -> tuple[float | None, float | None]:
    """(lowest, highest) over repetitions r of the speedup that repetition r alone measures on the prompts `index`;
    (None, None) unless every run kept its repetitions and all have as many."""
    counts = {len(group[i].repetitions) for group in (baseline, runs) for i in index}
    if len(counts) != 1 or 0 in counts:
        return None, None
    tokens = sum(len(baseline[i].tokens) for i in index), sum(len(runs[i].tokens) for i in index)
    speedups = []
    for r in range(counts.pop()):
        base, mine = (sum(group[i].repetitions[r] for i in index) for group in (baseline, runs))
        if base and mine and tokens[0]:
            speedups.append((tokens[1] / mine) / (tokens[0] / base))
    return (min(speedups), max(speedups)) if speedups else (None, None)


def _throughput(runs: list[Run], index: list[int]) -> float:
    seconds = sum(runs[i].seconds for i in index)
    return sum(len(runs[i].tokens) for i in index) / seconds if seconds else 0.0


def _add_speculation(row: Row, m: DecodeMetrics, records: list[list[StepRecord]], k: int,
                     costs: Costs | None) -> None:
    row.acceptance, row.mean_accepted_tokens, row.mean_drafted = m.acceptance, m.mean_accepted_tokens, m.mean_drafted
    row.plain_steps = m.decodes
    row.copied_share = m.copied / m.drafted if m.drafted else None
    row.copy_acceptance, row.draft_acceptance = m.copy_acceptance, m.model_draft_acceptance
    row.draft_seconds_per_token, row.verify_seconds_per_step = m.draft_seconds_per_token, m.verify_seconds_per_step
    row.a = acceptance_per_token(r for rs in records for r in rs)
    if costs is None or row.a is None:
        return
    row.c, row.v = costs.c, costs.v[k]
    row.bound = bound_for_lengths(row.a, costs.c, costs.v, m.draft_lengths, m.copied_lengths, m.vetted)
    row.efficiency = row.speedup / row.bound if row.bound and row.speedup else None


def _add_in_run_costs(row: Row, m: DecodeMetrics, ar: DecodeMetrics) -> None:
    """c, v, the bound and the efficiency as the decoder itself paid them (see the module doc)."""
    ar_unit, mine = ar.seconds_per_token, m.seconds_per_token
    if not ar_unit or not mine or m.draft_seconds_per_token is None:
        return
    row.c_in_run = m.draft_seconds_per_token / ar_unit
    row.v_in_run = m.verify_seconds_per_step / ar_unit
    row.decode_speedup = ar_unit / mine
    if row.a is not None and m.draft_lengths:
        v = {n: row.v_in_run for n in set(m.draft_lengths)}  # the mean verification, whatever the step's length
        row.bound_in_run = bound_for_lengths(row.a, row.c_in_run, v, m.draft_lengths, m.copied_lengths, m.vetted)
        row.efficiency_in_run = row.decode_speedup / row.bound_in_run
