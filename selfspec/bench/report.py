"""The benchmark's outputs: the Markdown table, the Plotly charts and bench.json."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from selfspec.bench.results import Row
from selfspec.engine.row_products import RowProducts

COLUMNS = ("method", "category", "tok/s", "speedup", "per repetition", "identical", "accept", "copied", "accept copied",
           "accept drafted", "tokens/verify", "plain steps",
           "a", "c", "v", "bound", "efficiency", "bound in-run", "efficiency in-run")


def _fmt(x, digits=2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def markdown_table(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in sorted(rows, key=lambda r: (r.category == "all", r.category)):
        cells = [r.method, r.category, _fmt(r.tokens_per_second, 1),
                 _fmt(r.speedup) + ("x" if r.speedup is not None else ""),
                 "–" if r.speedup_low is None else f"{r.speedup_low:.2f}–{r.speedup_high:.2f}x",
                 "yes" if r.identical else "NO",
                 _fmt(r.acceptance), _fmt(r.copied_share), _fmt(r.copy_acceptance), _fmt(r.draft_acceptance),
                 _fmt(r.mean_accepted_tokens),
                 "–" if r.plain_steps is None else str(r.plain_steps), _fmt(r.a), _fmt(r.c, 3), _fmt(r.v),
                 _fmt(r.bound), _fmt(r.efficiency), _fmt(r.bound_in_run), _fmt(r.efficiency_in_run)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_charts(rows: Sequence[Row], out: Path, title: str) -> list[Path]:
    """Plotly charts: speedup per category and method; measured vs bound for self-speculation."""
    import plotly.graph_objects as go

    categories = list(dict.fromkeys(r.category for r in rows))
    speed = go.Figure([go.Bar(name=m, x=categories,
                              y=[next((r.speedup for r in rows if r.method == m and r.category == c), None)
                                 for c in categories])
                       for m in dict.fromkeys(r.method for r in rows)])
    speed.add_hline(y=1.0, line_dash="dot")
    speed.update_layout(barmode="group", title=f"Speedup vs our autoregressive loop — {title}",
                        yaxis_title="speedup (x)")
    spec = [r for r in rows if r.bound is not None]
    bound = go.Figure()
    for m in dict.fromkeys(r.method for r in spec):
        mine = [r for r in spec if r.method == m]
        bound.add_bar(name=f"{m} measured", x=[r.category for r in mine], y=[r.speedup for r in mine])
        bound.add_scatter(name=f"{m} bound E/(Kc+v)", x=[r.category for r in mine], y=[r.bound for r in mine],
                          mode="markers", marker_symbol="line-ew-open", marker_size=28)
    bound.update_layout(barmode="group", title=f"Self-speculation: measured speedup vs cost-model bound — {title}",
                        yaxis_title="speedup (x)")
    written = []
    for name, fig in (("speedup", speed), ("bound", bound)):
        path = out / f"{name}.html"
        fig.write_html(path, include_plotlyjs="cdn")
        written.append(path)
        try:  # PNG only when an image engine (kaleido) is installed
            fig.write_image(out / f"{name}.png")
            written.append(out / f"{name}.png")
        except Exception:
            pass
    return written


def overhead_lines(detail: dict) -> list[str]:
    """What bench prints under its table: the engine, the floor and the step costs."""
    engine, floor, over = detail["engine"], detail["floor"], detail["overhead"]
    compiled = engine["compiled"] if engine["compiled"] == "off" else "on"
    products = RowProducts.summary_of(engine["products"])
    copies = engine["products"].get("extra_bytes", 0)
    forms = "; ".join(f"{what}: {form}" for what, form in engine.get("forms", {}).items())
    loop = engine.get("layer_loop")
    exact = engine.get("exact_verifications")
    lines = [f"engine: {engine['cache']} cache, compiled {compiled}" + (f", layers in {loop}" if loop else "")
             + f"; few-row products: {products}"
             + (f" (packed weight copies: {copies / 1e6:.0f} MB)" if copies else "")
             + (f"; forms: {forms}" if forms else "")
             + ("" if exact is None else "; verifications bit for bit the one-token steps: "
                + ("yes" if exact else "no, so a 16-bit greedy output may part from plain decoding's at a near-tie"))]
    if over["ar_ms_per_token"] is not None:
        lines.append(f"autoregressive {over['ar_ms_per_token']:.1f} ms/token = {over['ar_over_floor']:.2f}x the floor "
                     f"of {over['floor_ms']:.1f} ms ({floor['how']}, {floor['weight_bytes'] / 1e6:.0f} MB, this run"
                     + (f": median of {floor['samples']} samples between the runs" if floor.get("samples", 1) > 1 else "")
                     + ")")
    for name, cv in over["methods"].items():
        v = ", ".join(f"v({k + 1})={x:.2f}" for k, x in sorted((int(k), x) for k, x in cv["v"].items()))
        lines.append(f"{name}: c={cv['c']:.3f}; {v}")
    return lines


def write_report(out: Path, rows: Sequence[Row], **fields) -> Path:
    """bench.json: the rows and whatever else the run records (model, machine, settings, costs, outputs)."""
    path = out / "bench.json"
    path.write_text(json.dumps({**fields, "rows": [asdict(r) for r in rows]}, indent=1) + "\n", encoding="utf-8")
    return path
