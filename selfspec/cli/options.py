"""Command-line options shared by the subcommands, and the settings and profile they select."""

from __future__ import annotations

import argparse
import sys

from selfspec.engine.sampling import Sampling
from selfspec.engine.settings import DraftSettings
from selfspec.models.loading import LanguageModel
from selfspec.models.pypi_gguf import KNOWN
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
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16, float16 or auto")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: where the model loads)")


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
                        help="adapt the draft-exit threshold to the acceptance rate (paper's rule); "
                             "--no-adaptive: a fixed threshold, or none without --threshold "
                             "(default: the profile's exit rule, else adaptive)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="draft-exit threshold on the draft's top-1 probability, or the adaptive rule's start "
                             "(default: the profile's, else %s)" % DraftSettings.threshold)


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
    return DraftSettings.from_profile(profile, max_draft=args.max_draft, exit=exit, threshold=args.threshold)


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
