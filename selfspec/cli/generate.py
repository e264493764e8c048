"""`selfspec generate`: one prompt, self-speculatively (and autoregressively first with --compare)."""

from __future__ import annotations

import argparse
import json

from selfspec.cli.options import (
    add_fetch_argument,
    add_generation_arguments,
    add_model_arguments,
    add_profile_arguments,
    draft_settings_from,
    profile_from,
    sampling_from,
)
from selfspec.generate import GenerationResult, generate
from selfspec.models.loading import LanguageModel, load_model
from selfspec.profiles.schema import SkipProfile


def register(commands) -> None:
    gen = commands.add_parser("generate", help="generate text, optionally comparing with plain decoding")
    add_model_arguments(gen)
    add_fetch_argument(gen)
    add_profile_arguments(gen)
    add_generation_arguments(gen)
    gen.add_argument("--compare", action="store_true", help="run autoregressive first, then self-speculative")
    gen.add_argument("--json", action="store_true", help="print one JSON object")
    gen.set_defaults(run=cmd_generate)


def cmd_generate(args: argparse.Namespace) -> int:
    # Settings are checked before the (slow) model load, so mistakes are reported at once.
    sampling, settings = sampling_from(args), draft_settings_from(args)
    if not args.prompt.strip():
        raise ValueError("the prompt is empty")
    lm = load_model(args.model, dtype=args.dtype, device=args.device, fetch=args.fetch)
    profile = profile_from(args, lm)
    settings = draft_settings_from(args, profile)
    prompt_ids = lm.encode(args.prompt, raw=args.raw)
    # Autoregressive first, then self-speculative: never at the same time, so timings are fair.
    baseline = generate(lm, prompt_ids, None, args.max_new_tokens, sampling) if args.compare else None
    spec = generate(lm, prompt_ids, profile, args.max_new_tokens, sampling, settings)
    if args.json:
        print(json.dumps(_json_report(lm, profile, baseline, spec)))
    else:
        _print_report(baseline, spec)
    return 0


def _json_report(lm: LanguageModel, profile: SkipProfile, baseline: GenerationResult | None,
                 spec: GenerationResult) -> dict:
    report = {"model": lm.name, "profile": profile.to_dict(), "self_speculative": spec.to_dict(with_steps=True)}
    if baseline is not None:
        report["autoregressive"] = baseline.to_dict()
        report["identical"] = baseline.token_ids == spec.token_ids
        report["speedup"] = (spec.summary.tokens_per_second / baseline.summary.tokens_per_second
                             if baseline.summary.tokens_per_second else None)
    return report


def _print_report(baseline: GenerationResult | None, spec: GenerationResult) -> None:
    if baseline is not None:
        print("=== autoregressive ===")
        print(baseline.text)
    print("=== self-speculative ===")
    print(spec.text)
    print()
    s = spec.summary
    if baseline is not None:
        b = baseline.summary
        print(f"autoregressive:   {b.new_tokens} tokens in {b.seconds:.2f} s = {b.tokens_per_second:.1f} tok/s")
    rate = f"{s.acceptance_rate:.2f}" if s.acceptance_rate is not None else "n/a"
    mean = f"{s.mean_accepted_tokens:.2f}" if s.mean_accepted_tokens is not None else "n/a"
    print(f"self-speculative: {s.new_tokens} tokens in {s.seconds:.2f} s = {s.tokens_per_second:.1f} tok/s, "
          f"acceptance {rate}, {mean} tokens per verification")
    if baseline is not None and baseline.summary.tokens_per_second:
        print(f"speedup {s.tokens_per_second / baseline.summary.tokens_per_second:.2f}x, "
              f"outputs identical: {baseline.token_ids == spec.token_ids}")
