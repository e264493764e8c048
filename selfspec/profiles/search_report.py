"""Tables comparing timed candidates: medians and speedups, and paired statistics against controls."""

from __future__ import annotations

from typing import Sequence

from selfspec.profiles.draft_weights import megabytes
from selfspec.profiles.measure import Measurement, median, paired_timings
from selfspec.profiles.paired import paired


def comparison_table(results: dict[str, list[Measurement]], baseline: str = "autoregressive") -> str:
    """Median rep of each candidate; speedup and draft cost ratio against the baseline's median."""
    medians = {name: median(ms) for name, ms in results.items()}
    base = medians[baseline].seconds_per_token
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    lines = ["| candidate | ms/token | speedup | acceptance | tokens/verify | draft cost ratio |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, m in medians.items():
        ratio = m.draft_seconds_per_token / base if m.draft_seconds_per_token else None
        lines.append(f"| {name} | {1000 * m.seconds_per_token:.1f} | {base / m.seconds_per_token:.2f}x | "
                     f"{fmt(m.acceptance, '.2f')} | {fmt(m.mean_accepted_tokens, '.2f')} | {fmt(ratio, '.2f')} |")
    return "\n".join(lines)

def paired_table(results: dict[str, list[Measurement]], subjects: Sequence[str], controls: Sequence[str]) -> str:
    """Each subject against each control on the same (prompt, rep) pairs: is it faster beyond noise?"""
    lines = ["| candidate | vs | faster in pairs | sign test p | speedup vs control [95% CI] |",
             "| --- | --- | ---: | ---: | ---: |"]
    for subject in subjects:
        for control in (c for c in controls if c != subject):
            stats = paired(paired_timings(results[subject]), paired_timings(results[control]))
            lines.append(f"| {subject} | {control} | {stats.summary()} |")
    return "\n".join(lines)

def weights_table(figures: dict[str, dict], chosen: str) -> str:
    """What the search found for each draft weights: measured end to end, and what the cost model predicted."""
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    lines = ["| draft weights | extra memory | skipped | K | ms/token | speedup | acceptance | c | "
             "predicted acceptance | predicted speedup |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for weights, f in figures.items():
        name = f"**{weights}** (chosen)" if weights == chosen else weights
        if "note" in f:
            lines.append(f"| {name} | {megabytes(f['extra_bytes'])} | {f['note']} |" + " |" * 7)
            continue
        ms = None if f.get("seconds_per_token") is None else 1000 * f["seconds_per_token"]
        lines.append(f"| {name} | {megabytes(f['extra_bytes'])} | {f['skipped_sublayers']} | {f['max_draft']} | "
                     f"{fmt(ms, '.1f')} | {fmt(f.get('speedup'), '.2f')}x | {fmt(f.get('acceptance'), '.2f')} | "
                     f"{fmt(f.get('c'), '.2f')} | {fmt(f.get('predicted_acceptance'), '.2f')} | "
                     f"{fmt(f.get('predicted_speedup'), '.2f')}x |")
    return "\n".join(lines)


def weights_reason(figures: dict[str, dict], chosen: str) -> str:
    """One sentence: why these draft weights, from the same run's final timings."""
    timed = {w: f for w, f in figures.items() if f.get("speedup") is not None}
    others = ", ".join(f"{w} {f['speedup']:.2f}x" for w, f in timed.items() if w != chosen)
    left_out = [w for w, f in figures.items() if "note" in f]
    reason = (f"draft weights {chosen}: fastest in the final timing ({timed[chosen]['speedup']:.2f}x vs autoregressive"
              + (f"; {others}" if others else "") + ")")
    if left_out:
        reason += f"; {', '.join(left_out)} not tried: over the memory budget"
    return reason + "."

