"""Both search methods on the embedded SmolLM2-135M-Instruct, measured in one run (issue 3's report).

    flock /tmp/selfspec-timing.lock python scripts/search_smollm2.py --greedy-minutes 8 --bayes-minutes 10 --reps 5

Runs the greedy search, then the paper's Bayesian search, then times round-robin: autoregressive decoding,
both profiles found, skipping nothing (with the greedy profile's settings, and with no early exit at
--none-max-draft, which suits a draft that is always accepted) and a random profile of the greedy one's size.
Prints the table of medians, then a paired comparison of each searched profile against every other candidate
on the same (prompt, rep) timings. The searched profile that was faster in that table is written to profiles/
as the bundled default."""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch


from selfspec.profiles.calibration import builtin_prompts
from selfspec.models.loading import load_model
from selfspec.profiles.schema import SkipProfile, profile_filename, read_profile, write_profile
from selfspec.engine.settings import DraftSettings
from selfspec.profiles.measure import compare, median
from selfspec.profiles.search import SearchRun, run_search
from selfspec.profiles.search_report import comparison_table, paired_table
from selfspec.profiles.sublayers import random_profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--greedy-minutes", type=float, default=6)
    parser.add_argument("--bayes-minutes", type=float, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--work", default="search-runs", help="folder for the profiles and search state")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", default="greedy,bayes", help="which searches to run, in order")
    parser.add_argument("--none-max-draft", type=int, default=8,
                        help="draft length for the skip-nothing control at its own best settings (no early exit)")
    parser.add_argument("--also", nargs="*", default=[], help="profile files to time in the same table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    lm = load_model()
    prompts = [lm.encode(t) for t in builtin_prompts()]
    work = Path(args.work)
    work.mkdir(exist_ok=True)
    found, spent = {}, {}
    minutes_for = {"greedy": args.greedy_minutes, "bayes": args.bayes_minutes}
    for method in args.methods.split(","):
        minutes = minutes_for[method]
        run = SearchRun(lm.model, lm.name, prompts, work / f"{method}.json",
                        max_new_tokens=args.max_new_tokens, budget_seconds=60 * minutes)
        t0 = time.monotonic()
        found[method] = run_search(run, method)
        spent[method] = time.monotonic() - t0
        p = found[method]
        print(f"{method}: {spent[method]:.0f} s wall ({p.search.trials} timed trials), skips attn {list(p.attn)} "
              f"mlp {list(p.mlp)}, max_draft {p.decoding.max_draft}", flush=True)

    greedy = found.get("greedy") or next(iter(found.values()))
    control = random_profile(greedy.num_layers, greedy.skipped_sublayers, random.Random(0))
    none = SkipProfile.none(greedy.num_layers)
    candidates = {"autoregressive": (None, greedy.decoding)}
    searched = []
    for method, p in found.items():
        searched.append(f"{method}, {spent[method]:.0f} s ({p.skipped_sublayers} skipped; {label(p.decoding)})")
        candidates[searched[-1]] = (p, p.decoding)
    for path in args.also:
        p = read_profile(path)
        candidates[f"{Path(path).name}: {p.search.method} ({p.skipped_sublayers} skipped; "
                   f"{label(p.decoding)})"] = (p, p.decoding)
    # Controls: skipping nothing with the searched profile's own settings, and with the settings that suit it
    # best (every draft is accepted, so a long draft that never exits early amortises verification most);
    # a random profile of the same size with the searched profile's settings.
    for settings in (greedy.decoding, DraftSettings(max_draft=args.none_max_draft, exit="off")):
        candidates[f"skip nothing ({label(settings)})"] = (none, settings)
    candidates[f"random ({control.skipped_sublayers} skipped; {label(greedy.decoding)})"] = (
        control, greedy.decoding)
    t0 = time.monotonic()
    results = compare(lm.model, prompts, candidates, args.max_new_tokens, args.reps)
    print(f"\nsearch wall time: {', '.join(f'{m} {t:.0f} s' for m, t in spent.items())}; "
          f"comparison {time.monotonic() - t0:.0f} s; {args.reps} reps x {len(prompts)} prompts x "
          f"{args.max_new_tokens} new tokens per candidate")
    for method, p in found.items():
        print(f"{method}: attn {list(p.attn)} mlp {list(p.mlp)}; {p.search.trials} timed trials")
    print(f"random control: attn {list(control.attn)} mlp {list(control.mlp)}\n")
    print(comparison_table(results))
    print("\nPaired: each (prompt, rep) timed in the same round; speedup = geometric mean of control/candidate\n")
    print(paired_table(results, searched, [name for name in candidates if name != "autoregressive"]))

    names = dict(zip(found, searched))
    best = found[min(found, key=lambda method: median(results[names[method]]).seconds_per_token)]
    target = Path(__file__).resolve().parent.parent / "selfspec" / "profiles" / "bundled" / profile_filename(lm.name)
    write_profile(best, target)
    print(f"\nbundled: {target} ({best.search.method})")


def label(settings: DraftSettings) -> str:
    """The decoding settings a candidate was timed with, for the table."""
    exits = {"adaptive": "adaptive exit", "fixed": f"exit below {settings.threshold}", "off": "no early exit"}
    return f"K={settings.max_draft}, {exits[settings.exit]}"

if __name__ == "__main__":
    main()
