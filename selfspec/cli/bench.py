"""`selfspec bench`: our decoders against transformers' own on a prompt suite (see bench/runner.py)."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

import torch

from selfspec.bench.prompts import CATEGORIES, builtin_suite, read_jsonl
from selfspec.bench.report import markdown_table, overhead_lines, write_charts, write_report
from selfspec.bench.runner import bench, build_methods
from selfspec.bench.vocabulary import choose_vocabulary, read_vocabulary, vocabulary_size, write_vocabulary
from selfspec.cli.options import (
    add_decoding_setup_arguments,
    context_tokens_from,
    int_list,
    profile_from,
    use_engine_arguments,
)
from selfspec.engine.devices import model_dtype_name
from selfspec.engine.settings import EXIT_RULES, DraftSettings
from selfspec.models.environment import device_name, library_versions
from selfspec.models.loading import LanguageModel, load_model
from selfspec.profiles.draft_weights import WEIGHT_CHOICES

def machine(lm: LanguageModel) -> dict:
    return {"device": device_name(lm.model), "versions": library_versions()}


def _exit_rules(text: str) -> list[str]:
    rules = [x.strip() for x in text.split(",") if x.strip()]
    unknown = set(rules) - set(EXIT_RULES)
    if not rules or unknown:
        raise argparse.ArgumentTypeError(f"exit rules are {', '.join(EXIT_RULES)}; got {text!r}")
    return rules


def _weights_list(text: str) -> list[str]:
    weights = [x.strip() for x in text.split(",") if x.strip()]
    if not weights or set(weights) - set(WEIGHT_CHOICES):
        raise argparse.ArgumentTypeError(f"draft weights are {', '.join(WEIGHT_CHOICES)}; got {text!r}")
    return weights


def _switch_list(text: str) -> list[bool]:
    words = {"on": True, "off": False}
    switches = [x.strip() for x in text.split(",") if x.strip()]
    if not switches or set(switches) - set(words):
        raise argparse.ArgumentTypeError(f"give on, off or on,off; got {text!r}")
    return [words[x] for x in dict.fromkeys(switches)]


METHOD_NAMES = ("generate", "generate-static", "self-speculative", "prompt-lookup", "early-exit")


def register(commands) -> None:
    p = commands.add_parser("bench", help="benchmark our decoders against transformers' on a prompt suite")
    add_decoding_setup_arguments(p)
    p.add_argument("--prompts", default=None, help="JSONL file of prompts (default: the built-in suite)")
    p.add_argument("--categories", default=",".join(CATEGORIES), help="built-in categories to run")
    p.add_argument("--per-category", type=int, default=2, help="built-in prompts per category (max 3)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--reps", type=int, default=3, help="timed repetitions per prompt (the median is kept)")
    p.add_argument("--methods", default=",".join(m for m in METHOD_NAMES if m != "generate-static"),
                   help=f"which of {', '.join(METHOD_NAMES)} to run besides our autoregressive loop "
                        "(generate-static compiles for minutes on a CPU, so it is not in the default)")
    p.add_argument("--max-draft", type=int_list, default=None,
                   help="K for self-speculation; a list runs each (default: the profile's)")
    p.add_argument("--draft-vocab", default="0",
                   help="draft head vocabulary sizes (0 = full head), comma-separated, or a vocabulary JSON file")
    p.add_argument("--exit", type=_exit_rules, default=None,
                   help=f"draft-exit rule: {', '.join(EXIT_RULES)}; a comma-separated list runs each "
                        "(default: the profile's)")
    p.add_argument("--threshold", type=float, default=None,
                   help="draft-exit threshold, or the adaptive rule's start (default: the profile's)")
    p.add_argument("--draft-weights", type=_weights_list, default=["full", "int8", "int4"],
                   help="draft weights to run, comma-separated, of full, int8, int4 and auto")
    p.add_argument("--controller", action=argparse.BooleanOptionalAction, default=True,
                   help="choose each step's draft length from measured costs, 0 = a plain step (default: on)")
    p.add_argument("--context-drafts", type=_switch_list, default=[True],
                   help="copy proposals from the context inside self-speculation: on, off, or on,off to run both")
    p.add_argument("--prompt-lookup", type=int, default=10, help="prompt_lookup_num_tokens for the peer")
    p.add_argument("--early-exit", type=int, default=None, help="assistant_early_exit layer (default: half)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--out", default=None, help="folder for bench.json and the charts")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=cmd_bench)


def draft_vocabularies(lm: LanguageModel, spec: str, out: Path | None) -> list[list[int] | None]:
    if Path(spec).suffix == ".json":
        return [read_vocabulary(spec)]
    sizes = int_list(spec)
    vocabs = []
    for size in sizes:
        if size == 0 or size >= vocabulary_size(lm):
            vocabs.append(None)
            continue
        ids = choose_vocabulary(lm, size)
        if out is not None:
            write_vocabulary(out / f"vocab-{size}.json", ids, lm.name, "selfspec.bench.vocabulary.choose_vocabulary")
        vocabs.append(ids)
    return vocabs


def cmd_bench(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.reps < 1 or args.max_new_tokens < 1:
        raise ValueError("--reps and --max-new-tokens must be positive")
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(names) - set(METHOD_NAMES)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; known: {', '.join(METHOD_NAMES)}")
    prompts = (read_jsonl(args.prompts) if args.prompts else
               builtin_suite(args.per_category, tuple(c.strip() for c in args.categories.split(","))))
    out = Path(args.out) if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    lm = load_model(args.model, dtype=args.dtype, device=args.device, fetch=args.fetch)
    use_engine_arguments(args, lm)
    profile = profile_from(args, lm)
    early_exit = args.early_exit or lm.model.config.num_hidden_layers // 2
    settings = [DraftSettings.from_profile(profile, max_draft=k, exit=rule, threshold=args.threshold,
                                           controller=args.controller, draft_weights=weights,
                                           context_tokens=context_tokens_from(context))
                for weights in args.draft_weights for k in args.max_draft or [None] for rule in args.exit or [None]
                for context in args.context_drafts]
    methods = build_methods(lm, profile, settings, draft_vocabularies(lm, args.draft_vocab, out),
                            names, args.prompt_lookup, early_exit)
    rows, detail = bench(lm, prompts, methods, args.max_new_tokens, args.reps, progress=not args.no_progress)
    dtype = model_dtype_name(lm.model)  # what the model runs in: "auto" may settle on a 16-bit dtype
    title = f"{lm.name}, {dtype}, {machine(lm)['device']}"
    print(f"## {title}\n")
    exits = list(dict.fromkeys(s.exit for s in settings))
    print(f"profile: attn={list(profile.attn)} mlp={list(profile.mlp)}; exit={','.join(exits)}; "
          f"controller={'on' if args.controller else 'off'}; "
          f"{len(prompts)} prompts, {args.max_new_tokens} new tokens, median of {args.reps} reps\n")
    print(markdown_table(rows))
    print("\n" + "\n".join(overhead_lines(detail)))
    drafts = {m.name: m.draft.describe() for m in methods if m.draft is not None}
    if drafts:
        print("draft layers run in: " + ", ".join(f"{name}: {d['layer_loop']}" for name, d in drafts.items()))
    if out is not None:
        report = write_report(out, rows, model=lm.name, dtype=dtype, placement=lm.placement, machine=machine(lm),
                              profile=profile.to_dict(),
                              settings={"max_new_tokens": args.max_new_tokens, "reps": args.reps,
                                        "draft": [asdict(s) for s in settings]},
                              drafts=drafts, **detail)
        charts = write_charts(rows, out, title)
        print(f"\nwrote {report}, " + ", ".join(str(p) for p in charts))
    return 0
