"""`selfspec push-profile`: validate a skip profile and upload it to a Hub repo (see profiles/hub.py)."""

from __future__ import annotations

from selfspec.profiles.hub import DEFAULT_PROFILE_REPO, profile_repo, push_profile


def register(commands) -> None:
    p = commands.add_parser("push-profile", help="validate a skip profile and upload it to a Hub repo")
    p.add_argument("file", help="profile JSON file")
    p.add_argument("--repo", default=None, help=f"Hub model repo (default: $SELFSPEC_PROFILE_REPO or {DEFAULT_PROFILE_REPO})")
    p.add_argument("--path-in-repo", default=None, help="default: <owner>--<model>.json from the profile's model")
    p.add_argument("--revision", default=None, help="branch to commit to (default: main)")
    p.set_defaults(run=cmd_push_profile)


def cmd_push_profile(args) -> int:
    url = push_profile(args.file, args.repo or profile_repo(), args.path_in_repo, args.revision)
    print(f"uploaded {args.file}: {url}")
    return 0
