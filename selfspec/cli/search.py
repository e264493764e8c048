"""`selfspec search`: search a skip profile for a model (see profiles/search.py)."""

from __future__ import annotations

import os
import random
from pathlib import Path

from selfspec.cli.options import add_draft_weights_arguments, add_fetch_argument, add_model_arguments
from selfspec.engine.lowbit import DRAFT_WEIGHTS
from selfspec.engine.settings import DraftSettings
from selfspec.models.loading import load_model
from selfspec.profiles.calibration import builtin_prompts, read_calibration
from selfspec.profiles.measure import compare
from selfspec.profiles.schema import SkipProfile, profile_filename
from selfspec.profiles.search import METHODS, SearchRun, run_search
from selfspec.profiles.search_report import comparison_table, paired_table, weights_reason, weights_table
from selfspec.profiles.sublayers import random_profile


def register(commands) -> None:
    p = commands.add_parser("search", help="search a skip profile for a model (fast greedy, or the paper's bayes)")
    add_model_arguments(p)
    add_fetch_argument(p)
    p.add_argument("--method", choices=METHODS, default="greedy",
                   help="greedy: ours, minutes; bayes: the paper's Bayesian optimisation, as long as the budget")
    p.add_argument("--budget-minutes", type=float, default=15.0, help="time for the search itself")
    p.add_argument("--max-trials", type=int, default=None, help="most end-to-end timings (all runs of a resumed search)")
    p.add_argument("--calibration", default=None,
                   help="prompts file: a JSON list of strings, or text with prompts separated by blank lines "
                        "(default: built-in summarisation, code and Q&A prompts)")
    p.add_argument("--out", default=None, help="profile to write (default: <model>.json here); state goes next to it")
    p.add_argument("--resume", action="store_true", help="continue an interrupted search with the same --out")
    p.add_argument("--max-new-tokens", type=int, default=32, help="tokens generated per prompt per timing")
    p.add_argument("--max-draft", type=int, default=None,
                   help=f"K the search starts from (default {DraftSettings.max_draft}); greedy also tries others")
    add_draft_weights_arguments(p, "the draft weights searched with the sublayers: auto (default) tries full, int8 "
                                   "and int4 within --max-draft-memory; full, int8 or int4 searches only those")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compare", action="store_true",
                   help="afterwards, also time skipping nothing and a random profile of the same size")
    p.set_defaults(run=cmd_search)


def writable_folder(folder: Path) -> None:
    """Make `folder` (and its parents) if needed; a clear error if it cannot be written in."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"cannot write the profile in {folder}: {exc.strerror or exc}") from None
    if not os.access(folder, os.W_OK):
        raise OSError(f"cannot write the profile in {folder}: permission denied")


def cmd_search(args) -> int:
    if args.budget_minutes <= 0:
        raise ValueError("--budget-minutes must be positive")
    texts = read_calibration(args.calibration) if args.calibration else builtin_prompts()
    if args.out:
        writable_folder(Path(args.out).parent)  # before minutes of search, not at its first checkpoint
    lm = load_model(args.model, dtype=args.dtype, device=args.device, fetch=args.fetch)
    out = Path(args.out or profile_filename(lm.name))
    run = SearchRun(lm.model, lm.name, [lm.encode(t) for t in texts], out,
                    calibration=args.calibration or "builtin", max_new_tokens=args.max_new_tokens,
                    settings=DraftSettings.from_profile(None, max_draft=args.max_draft), budget_seconds=60 * args.budget_minutes,
                    max_trials=args.max_trials, seed=args.seed, budget_bytes=args.max_draft_memory,
                    weights=DRAFT_WEIGHTS if args.draft_weights in (None, "auto") else (args.draft_weights,))
    profile = run_search(run, args.method, resume=args.resume)
    s = profile.search
    print(f"{out}: skips attention {list(profile.attn)} and MLP {list(profile.mlp)} "
          f"({profile.skipped_sublayers} of {2 * profile.num_layers} sublayers), max_draft {profile.decoding.max_draft}, "
          f"draft weights {profile.decoding.draft_weights}")
    print(f"{s.method}: {s.trials} trials in {s.seconds:.0f} s; {1000 * s.objective:.1f} ms/token, "
          f"speedup {s.speedup:.2f}x vs autoregressive, acceptance {s.acceptance or 0:.2f}, "
          f"{s.mean_accepted_tokens or 0:.2f} tokens per verification, draft cost ratio {s.draft_cost_ratio or 0:.2f}")
    print(weights_reason(s.weights, profile.decoding.draft_weights))
    print(weights_table(s.weights, profile.decoding.draft_weights))
    if args.compare:
        control = random_profile(profile.num_layers, profile.skipped_sublayers, random.Random(args.seed))
        settings = DraftSettings.from_profile(profile)
        searched = f"searched ({args.method})"
        draft = run.drafts[settings.draft_weights]  # every candidate drafts with the weights the search chose
        results = compare(lm.model, run.prompts, {
            "autoregressive": (None, settings), searched: (draft.with_profile(profile), settings),
            "skip nothing": (draft.with_profile(SkipProfile.none(profile.num_layers)), settings),
            "random, same size": (draft.with_profile(control), settings)}, args.max_new_tokens)
        print(comparison_table(results))
        print(paired_table(results, [searched], ["skip nothing", "random, same size"]))
    return 0
