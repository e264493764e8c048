"""HTML for the app's two text panels and its summary line, computed from a race's records.

In a "speculate" record the first `accepted` tokens came from the draft (verified by the full
model) and the last one from the full model: a correction when a draft was rejected, a bonus when
every draft was accepted. The prefill's token comes from the full model; so does the token of a
"decode" record, which in the self-speculative lane is a plain step: the controller judged that no
draft would pay there (engine/controller.py), and it is marked as such.
"""

from __future__ import annotations

import html
from typing import Callable, Sequence

from selfspec.engine.divergence import Divergence
from selfspec.engine.draft import DraftModel
from selfspec.engine.records import StepRecord
from selfspec.ui.explain import cost_line, race_costs, verdict
from selfspec.ui.race import Lane, Race

Decode = Callable[[Sequence[int]], str]

# Translucent colours read on light and dark themes alike.
MARKS = {
    "draft": ("rgba(34, 160, 80, 0.28)", "drafted, accepted by the full model"),
    "copied": ("rgba(150, 80, 210, 0.30)", "copied from the context, accepted by the full model"),
    "correction": ("rgba(230, 120, 0, 0.38)", "full model: correction of a rejected draft"),
    "bonus": ("rgba(60, 110, 230, 0.32)", "full model: bonus token after all drafts were accepted"),
    "plain": ("rgba(120, 120, 120, 0.25)", "full model: a plain step, no draft (drafting did not pay here)"),
}
LANE_COLOURS = {"autoregressive": "#6b7280", "self-speculative": "#e8710a"}
TITLES = {"autoregressive": ("Autoregressive", "the full model, one token per step"),
          "self-speculative": ("Self-speculative", "a cheaper copy of the model drafts, one full-model check per step")}


def draft_label(draft: DraftModel) -> str:
    """What the draft is, in a few words: its weights and what it skips (`auto` may choose either)."""
    skipped, weights = draft.profile.skipped_sublayers, draft.weights
    skips = f"{skipped} of {2 * draft.profile.num_layers} sublayers skipped"
    if weights == "full":
        return f"skip-layer draft ({skips})" if skipped else "the full model as its own draft"
    return f"{weights}-weight draft" + (f", {skips}" if skipped else ", nothing skipped")


def speculative_subtitle(label: str | None) -> str:
    return f"{label}, one full-model check per step" if label else TITLES["self-speculative"][1]


def token_sources(record: StepRecord) -> list[str]:
    """Where each committed token of a record came from: 'full' (the prefill), 'plain' (a step without a
    draft), 'copied', 'draft', 'correction' or 'bonus'."""
    if record.kind != "speculate":
        return ["plain" if record.kind == "decode" else "full"] * len(record.token_ids)
    last = "bonus" if record.accepted == record.drafted else "correction"
    kept = ["copied"] * record.copied_accepted + ["draft"] * (record.accepted - record.copied_accepted)
    # The decoder may cut a step short (token budget, end of sequence): keep the leading sources.
    return (kept + [last])[: len(record.token_ids)]


def segments(decode: Decode, records: Sequence[StepRecord]) -> list[tuple[str, str]]:
    """(text, source) runs of consecutive tokens with the same source.

    Text is decoded from prefixes, not token by token, so that spacing and characters split across
    byte-level tokens come out exactly as in the decoded whole.
    """
    ids: list[int] = []
    bounds: list[tuple[int, str]] = []  # (end index into ids, source) for each run
    for record in records:
        for token, source in zip(record.token_ids, token_sources(record)):
            ids.append(token)
            if bounds and bounds[-1][1] == source:
                bounds[-1] = (len(ids), source)
            else:
                bounds.append((len(ids), source))
    out, done = [], ""
    for end, source in bounds:
        text = decode(ids[:end]).rstrip("\ufffd")  # an unfinished multi-byte character waits
        if text.startswith(done) and len(text) > len(done):
            out.append((text[len(done):], source))
            done = text
    return out


def marked_text(decode: Decode, records: Sequence[StepRecord], marked: bool) -> str:
    parts = []
    for text, source in segments(decode, records):
        text = html.escape(text)
        if marked and source in MARKS:
            title = html.escape(MARKS[source][1])
            text = f'<span title="{title}" style="background:{MARKS[source][0]};border-radius:3px">{text}</span>'
        parts.append(text)
    return "".join(parts)


def legend() -> str:
    items = [f'<span style="background:{colour};border-radius:3px;padding:0 6px">{html.escape(label)}</span>'
             for colour, label in MARKS.values()]
    return f'<div style="font-size:0.8em;margin-top:8px;display:flex;flex-wrap:wrap;gap:6px">{"".join(items)}</div>'


def panel(decode: Decode, lane: Lane, leader: bool, running: bool, draft: str | None = None) -> str:
    """One side of the race: title, live speed, the text (marked for the self-speculative lane).
    `draft`: the self-speculative lane's draft in a few words (`draft_label`)."""
    speculative = lane.name == "self-speculative"
    colour = LANE_COLOURS[lane.name]
    tokens = len(lane.token_ids)
    title, subtitle = TITLES[lane.name]
    if speculative:
        subtitle = speculative_subtitle(draft)
    count = f"{tokens} token" if tokens == 1 else f"{tokens} tokens"
    status = "" if lane.done or not running else " · running"
    badge = (f' <span style="background:{colour};color:white;border-radius:8px;padding:1px 8px">faster</span>'
             if leader else "")
    text = marked_text(decode, lane.records, marked=speculative) or '<span style="opacity:0.5">…</span>'
    return (
        f'<div style="border:2px solid {colour};border-radius:10px;padding:10px 12px;height:100%">'
        f'<div style="display:flex;flex-wrap:wrap;justify-content:space-between;gap:4px;font-weight:600">'
        f'<span style="color:{colour}">{title}</span>'
        f'<span>{count} · {lane.tokens_per_second:.1f} tok/s{badge}{status}</span></div>'
        f'<div style="font-size:0.8em;opacity:0.7">{subtitle}</div>'
        f'<div style="white-space:pre-wrap;margin-top:8px;min-height:6em;line-height:1.5">{text}</div>'
        f'{legend() if speculative else ""}</div>'
    )


def panels(decode: Decode, race: Race, running: bool, draft: str | None = None) -> tuple[str, str]:
    """Both panels; the faster lane (by its own tokens per second) wears a badge once both have run."""
    ar, spec = race.autoregressive, race.speculative
    both = len(ar.records) > 1 and len(spec.records) > 1
    speedup = race.speedup
    leader = None if not both or speedup is None else (spec if speedup > 1 else ar)
    return panel(decode, ar, leader is ar, running), panel(decode, spec, leader is spec, running, draft)


def summary_line(race: Race, greedy: bool, running: bool, divergence: Divergence | None = None) -> str:
    """Markdown: which side is faster, by how much, and why (the race's costs on one clock, the verdict).

    `divergence`: where differing greedy outputs part (engine/divergence.py), shown instead of a bare "differ".
    """
    ar, spec = race.autoregressive, race.speculative
    s = spec.summary()
    speedup = race.speedup
    head = "Running…" if running else "Done."
    if speedup is not None and len(spec.records) > 1:
        verdict_word = "faster" if speedup >= 1 else "slower"
        head += f" **Self-speculative is {speedup:.2f}× the autoregressive speed ({verdict_word}).**"
    parts = [f"autoregressive {ar.tokens_per_second:.1f} tok/s",
             f"self-speculative {spec.tokens_per_second:.1f} tok/s"]
    if s.acceptance_rate is not None:
        parts.append(f"acceptance {s.acceptance_rate:.0%} of {s.drafted} proposed tokens (copied or drafted)")
        parts.append(f"{s.mean_accepted_tokens:.2f} tokens per verification")
    if s.plain_steps:
        parts.append(f"{s.plain_steps} plain step{'s' if s.plain_steps > 1 else ''} without a draft")
    if not running:
        if not greedy:
            parts.append("sampling: the texts differ by chance; both follow the full model's distribution")
        elif race.identical:
            parts.append("outputs identical ✓")
        else:
            parts.append(divergence.describe() if divergence else "outputs differ ✗")
    line = head + " " + " · ".join(parts)
    costs = race_costs(race)
    if costs is not None:
        line += f"  \n*Why:* {cost_line(costs)}"
        expected = verdict(costs)
        line += f" {expected[0].upper()}{expected[1:]}" if expected else ""
    return line
