"""Both search methods on the embedded SmolLM2-135M-Instruct, measured in one run (issue 3's report).

    flock /tmp/selfspec-timing.lock python scripts/search_smollm2.py --greedy-minutes 6 --bayes-minutes 10

Runs the greedy search, then the paper's Bayesian search, then times autoregressive decoding, both
profiles found, skipping nothing and a random profile of the greedy one's size, round-robin, and
prints one table. The searched profile that was faster in that table is written to profiles/ as the bundled default.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from selfspec.calibration import builtin_prompts  # noqa: E402
from selfspec.models import load_model  # noqa: E402
from selfspec.profile import SkipProfile, profile_filename, read_profile, write_profile  # noqa: E402
from selfspec.search import SearchRun, compare, comparison_table, random_profile, run_search  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--greedy-minutes", type=float, default=6)
    parser.add_argument("--bayes-minutes", type=float, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--work", default="search-runs", help="folder for the profiles and search state")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", default="greedy,bayes", help="which searches to run, in order")
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
    candidates = {"autoregressive": (None, greedy.decoding.settings())}
    for method, p in found.items():
        candidates[f"{method} ({p.skipped_sublayers} skipped, K={p.decoding.max_draft})"] = (p, p.decoding.settings())
    for path in args.also:
        p = read_profile(path)
        candidates[f"{Path(path).name}: {p.search.method} ({p.skipped_sublayers} skipped)"] = (p, p.decoding.settings())
    candidates["skip nothing"] = (SkipProfile.none(greedy.num_layers), greedy.decoding.settings())
    candidates[f"random ({control.skipped_sublayers} skipped)"] = (control, greedy.decoding.settings())
    results = compare(lm.model, prompts, candidates, args.max_new_tokens, args.reps)
    print(f"\nsearch wall time: {', '.join(f'{m} {t:.0f} s' for m, t in spent.items())}; "
          f"random control attn {list(control.attn)} mlp {list(control.mlp)}")
    print(comparison_table(results))

    names = {method: next(name for name in results if name.startswith(method)) for method in found}
    best = found[min(found, key=lambda method: results[names[method]].seconds_per_token)]
    target = Path(__file__).resolve().parent.parent / "profiles" / profile_filename(lm.name)
    write_profile(best, target)
    print(f"\nbundled: {target} ({best.search.method})")


if __name__ == "__main__":
    main()
