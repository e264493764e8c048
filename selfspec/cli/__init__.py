"""Command line: `selfspec generate | bench | search | push-profile ...` (also `python -m selfspec`).

Every subcommand is registered here, from its own module in this package; the library never imports it.
"""

from __future__ import annotations

import argparse
import sys

from selfspec.cli import bench, generate, hub, search
from selfspec.errors import USER_ERRORS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m selfspec", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for command in (generate, bench, search, hub):
        command.register(commands)
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
