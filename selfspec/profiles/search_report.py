"""Tables comparing timed candidates: medians and speedups, and paired statistics against controls."""

from __future__ import annotations

from typing import Sequence

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
