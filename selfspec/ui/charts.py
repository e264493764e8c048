"""Plotly figures of a race, built from the step records (used by the app, updated live)."""

from __future__ import annotations

from collections import Counter
from itertools import accumulate

import plotly.graph_objects as go

from selfspec.ui.race import Lane, Race
from selfspec.ui.render import LANE_COLOURS, MARKS


def _layout(fig: go.Figure, title: str, x: str, y: str) -> go.Figure:
    fig.update_layout(
        title=dict(text=title, font=dict(size=14)), height=300, margin=dict(l=50, r=10, t=40, b=70),
        legend=dict(orientation="h", yanchor="top", y=-0.22, xanchor="center", x=0.5),
        xaxis_title=x, yaxis_title=y, template="plotly_white",
        modebar=dict(orientation="v"),  # beside the plot, not over its title on narrow screens
    )
    return fig


def _own_times(lane: Lane) -> list[float]:
    return list(accumulate(lane.step_seconds))


def race_figure(race: Race) -> go.Figure:
    """Cumulative tokens against each method's own decoding time: the steeper line is faster."""
    fig = go.Figure()
    for lane in race.lanes:
        counts = list(accumulate(len(r.token_ids) for r in lane.records))
        fig.add_scatter(x=[0.0] + _own_times(lane), y=[0] + counts, mode="lines", name=lane.name,
                        line=dict(color=LANE_COLOURS[lane.name], shape="hv", width=3))
    return _layout(fig, "Tokens generated over time", "seconds of decoding", "tokens")


def _step_speeds(lane: Lane, kinds: tuple[str, ...]) -> list[tuple[float, float]]:
    """(own time, tokens per second) of the lane's steps of these kinds."""
    return [(t, len(r.token_ids) / s) for r, s, t in zip(lane.records, lane.step_seconds, _own_times(lane))
            if r.kind in kinds and s > 0]


def speed_figure(race: Race) -> go.Figure:
    """Tokens per second of every decoding step (the prefill, which reads the prompt, is left out); the
    self-speculative lane's plain steps (no draft) are marked apart."""
    fig = go.Figure()
    for lane in race.lanes:
        points = _step_speeds(lane, ("decode", "speculate"))
        fig.add_scatter(x=[t for t, _ in points], y=[v for _, v in points], mode="lines+markers",
                        name=lane.name, line=dict(color=LANE_COLOURS[lane.name], width=1.5),
                        marker=dict(size=5))
    plain = _step_speeds(race.speculative, ("decode",))
    if plain:
        fig.add_scatter(x=[t for t, _ in plain], y=[v for _, v in plain], mode="markers",
                        name="plain step (no draft)", marker=dict(size=9, symbol="circle-open", color=MARKS["plain"][0],
                                                                  line=dict(width=2, color="rgb(110, 110, 110)")))
    return _layout(fig, "Tokens per second, step by step", "seconds of decoding", "tokens / s")


def acceptance_figure(lane: Lane) -> go.Figure:
    """Share of drafted tokens accepted at each verification, and the running mean."""
    steps = [r for r in lane.records if r.kind == "speculate" and r.drafted]
    running = [a / d for a, d in zip(accumulate(r.accepted for r in steps), accumulate(r.drafted for r in steps))]
    x = list(range(1, len(steps) + 1))
    fig = go.Figure()
    # One stacked bar per step, split by where the kept tokens came from (their sum is the step's rate).
    kept = {"copied": [r.copied_accepted for r in steps], "draft": [r.accepted - r.copied_accepted for r in steps]}
    for source, label in (("draft", "drafted, kept"), ("copied", "copied from the context, kept")):
        if source == "copied" and not any(kept["copied"]):
            continue
        fig.add_bar(x=x, y=[k / r.drafted for k, r in zip(kept[source], steps)], name=label,
                    marker_color=MARKS[source][0],
                    customdata=[[k, r.drafted, r.copied] for k, r in zip(kept[source], steps)],
                    hovertemplate="step %{x}: %{customdata[0]} kept of %{customdata[1]} proposed "
                                  "(%{customdata[2]} copied)<extra></extra>")
    fig.add_scatter(x=x, y=running, mode="lines", name="running mean", line=dict(color=LANE_COLOURS[lane.name]))
    fig.update_layout(barmode="stack")
    fig.update_yaxes(range=[0, 1.05], tickformat=".0%")
    return _layout(fig, "Draft acceptance per verification", "verification", "accepted")


def accepted_lengths_figure(lane: Lane, max_draft: int) -> go.Figure:
    """How many drafted tokens each verification kept (0 .. max draft), and how many steps had no draft."""
    counts = Counter(r.accepted for r in lane.records if r.kind == "speculate" and r.drafted)
    plain = sum(r.kind == "decode" for r in lane.records)
    x = list(range(0, max(max_draft, max(counts, default=0)) + 1))
    fig = go.Figure()
    fig.add_bar(x=x, y=[counts.get(i, 0) for i in x], marker_color=LANE_COLOURS[lane.name], name="verifications")
    if plain:  # a bar of its own left of 0: steps the controller ran without a draft
        fig.add_bar(x=[-1], y=[plain], marker_color=MARKS["plain"][0], name="plain steps (no draft)")
        fig.update_xaxes(tickvals=[-1, *x], ticktext=["plain", *map(str, x)])
    else:
        fig.update_xaxes(dtick=1)
    return _layout(fig, "Accepted draft length", "draft tokens accepted", "verifications")


def figures(race: Race, max_draft: int) -> tuple[go.Figure, ...]:
    spec = race.speculative
    return race_figure(race), speed_figure(race), acceptance_figure(spec), accepted_lengths_figure(spec, max_draft)
