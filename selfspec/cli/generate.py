"""`selfspec generate`: one prompt, self-speculatively (and autoregressively first with --compare)."""

from __future__ import annotations

import argparse
import json

from selfspec.cli.options import (
    add_decoding_setup_arguments,
    add_generation_arguments,
    draft_from,
    draft_settings_from,
    profile_from,
    sampling_from,
    use_engine_arguments,
)
from selfspec.engine.divergence import Divergence, explain_difference
from selfspec.engine.draft import DraftModel
from selfspec.generate import GenerationResult, generate
from selfspec.models.loading import LanguageModel, load_model
from selfspec.profiles.draft_weights import WeightsChoice
from selfspec.profiles.schema import SkipProfile


def register(commands) -> None:
    gen = commands.add_parser("generate", help="generate text, optionally comparing with plain decoding")
    add_decoding_setup_arguments(gen)
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
    use_engine_arguments(args, lm)
    profile = profile_from(args, lm)
    settings = draft_settings_from(args, profile)
    prompt_ids = lm.encode(args.prompt, raw=args.raw)
    draft, choice = draft_from(args, lm, profile, settings)
    # Autoregressive first, then self-speculative: never at the same time, so timings are fair.
    baseline = generate(lm, prompt_ids, None, args.max_new_tokens, sampling) if args.compare else None
    spec = generate(lm, prompt_ids, draft, args.max_new_tokens, sampling, settings)
    # Differing greedy outputs: where they part and the full model's own top-2 gap there.
    divergence = (explain_difference(lm.model, prompt_ids, baseline.token_ids, spec.token_ids)
                  if baseline is not None and sampling.greedy else None)
    if args.json:
        print(json.dumps(_json_report(lm, profile, baseline, spec, draft, choice, divergence)))
    else:
        _print_report(baseline, spec, divergence)
    return 0


def draft_report(draft: DraftModel, choice: WeightsChoice | None) -> dict:
    """What the draft is and costs: its weights, the memory they add, the kernels, auto's measurement."""
    report = draft.describe()
    if choice is not None:
        report["draft_weights_choice"] = choice.to_dict()
    return report


def _json_report(lm: LanguageModel, profile: SkipProfile, baseline: GenerationResult | None,
                 spec: GenerationResult, draft: DraftModel, choice: WeightsChoice | None,
                 divergence: Divergence | None = None) -> dict:
    report = {"model": lm.name, "profile": profile.to_dict(), "engine": lm.engine.describe(),
              "self_speculative": {**spec.to_dict(with_steps=True), **draft_report(draft, choice)}}
    if baseline is not None:
        report["autoregressive"] = baseline.to_dict()
        report["identical"] = baseline.token_ids == spec.token_ids
        report["divergence"] = divergence.to_dict() if divergence is not None else None
        report["speedup"] = (spec.summary.tokens_per_second / baseline.summary.tokens_per_second
                             if baseline.summary.tokens_per_second else None)
    return report


def _print_report(baseline: GenerationResult | None, spec: GenerationResult,
                  divergence: Divergence | None = None) -> None:
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
          f"acceptance {rate}, {mean} tokens per verification, {s.plain_steps} plain steps")
    if baseline is not None and baseline.summary.tokens_per_second:
        print(f"speedup {s.tokens_per_second / baseline.summary.tokens_per_second:.2f}x, "
              f"outputs identical: {baseline.token_ids == spec.token_ids}")
    if divergence is not None:
        print(divergence.describe())
