"""Skip profiles on the Hugging Face Hub: fetching `hub:` references, the default profile repo, uploading.

- `hub:<owner>/<repo>/<path>[@revision]` names one profile file in a Hub model repo.
- The default profile repo (env `SELFSPEC_PROFILE_REPO`, default `selfspec/skip-profiles`) holds one
  file per model, named after the model id: `HuggingFaceTB--SmolLM2-135M-Instruct.json`.
  `load_profile(model)` tries, in order: that repo on the Hub; the copy huggingface_hub cached from it
  earlier (when the Hub cannot be reached or HF_HUB_OFFLINE=1); the profile bundled in `selfspec/profiles/bundled/`;
  none. Its `notice` says which one was used and why.
- `push_profile` validates a profile file and uploads it with `HfApi.upload_file`.

The endpoint is the library's (`HF_ENDPOINT`), the token is the library's (HF_TOKEN or `hf auth login`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from selfspec.models.hub_status import hub_endpoint, hub_offline
from selfspec.profiles.schema import ProfileError, SkipProfile, profile_filename, read_profile

DEFAULT_PROFILE_REPO = "selfspec/skip-profiles"
BUNDLED_PACKAGE = "selfspec.profiles.bundled"  # package data: found in a checkout and in an installed wheel alike
HUB_PREFIX = "hub:"


@dataclass(frozen=True)
class ResolvedProfile:
    profile: SkipProfile | None
    source: str  # "hub", "cache", "bundled" or "none"
    notice: str  # one human sentence: which profile was used and why


def profile_repo() -> str:
    return os.environ.get("SELFSPEC_PROFILE_REPO") or DEFAULT_PROFILE_REPO


def parse_hub_ref(ref: str) -> tuple[str, str, str | None]:
    """'hub:owner/repo/dir/file.json@rev' -> ('owner/repo', 'dir/file.json', 'rev')."""
    body = ref[len(HUB_PREFIX):] if ref.startswith(HUB_PREFIX) else ref
    body, _, revision = body.partition("@")
    parts = [p for p in body.split("/") if p]
    if len(parts) < 3 or revision == "" and "@" in ref:
        raise ProfileError(f"a Hub profile reference looks like hub:<owner>/<repo>/<path>[@revision], got {ref!r}")
    return "/".join(parts[:2]), "/".join(parts[2:]), revision or None


def fetch_profile(ref: str) -> SkipProfile:
    """Download (or take from the library's cache) the profile a `hub:` reference names."""
    from huggingface_hub import hf_hub_download

    repo_id, filename, revision = parse_hub_ref(ref)
    try:
        path = hf_hub_download(repo_id, filename, revision=revision, endpoint=hub_endpoint(),
                               local_files_only=hub_offline())
    except Exception as exc:  # the library raises many kinds; the user needs one line
        raise ProfileError(f"cannot fetch profile {ref}: {_one_line(exc)}") from None
    return read_profile(path)


def _one_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _hub_state(repo_id: str, filename: str) -> str:
    """'found', 'missing' (the Hub answered: no such repo or file) or 'unreachable'."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    if hub_offline():
        return "unreachable"
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, filename, endpoint=hub_endpoint()), timeout=10)
        return "found"
    except (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError):
        return "missing"
    except Exception:  # connection refused, DNS, timeout, 5xx, auth: the Hub cannot help now
        return "unreachable"


def load_profile(model_name: str, num_layers: int | None = None, model=None) -> ResolvedProfile:
    """The skip profile for `model_name`: Hub, then cache, then bundled, else none (see module doc).

    A candidate that does not fit (`num_layers`, or the fingerprint of `model` when given) is passed
    over, and the notice says so.
    """
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    repo, filename = profile_repo(), profile_filename(model_name)
    state = _hub_state(repo, filename)
    problems: list[str] = []

    def usable(path, where: str) -> SkipProfile | None:
        try:
            profile = read_profile(path)
            if num_layers is not None:
                profile.check_fits(num_layers)
            if model is not None:
                profile.check_model(model)
            return profile
        except ProfileError as exc:
            problems.append(f"the {where} profile was not used ({exc})")
            return None

    if state == "found":
        try:
            path = hf_hub_download(repo, filename, endpoint=hub_endpoint())
        except Exception as exc:
            problems.append(f"downloading it failed ({_one_line(exc)})")
            state = "unreachable"
        else:
            if profile := usable(path, "Hub"):
                return ResolvedProfile(profile, "hub", f"Using the skip profile for {model_name} from the Hub ({repo}).")
    why = {"found": "", "missing": f"the Hub repo {repo} has no profile for {model_name}",
           "unreachable": "the Hub is offline (HF_HUB_OFFLINE=1)" if hub_offline() else f"the Hub ({repo}) cannot be reached"}[state]

    def reasons() -> str:
        return "; ".join(r for r in [why, *problems] if r)

    if state == "unreachable":
        cached = try_to_load_from_cache(repo, filename)
        if isinstance(cached, str) and (profile := usable(cached, "cached")):
            return ResolvedProfile(profile, "cache", f"Using the cached copy of the Hub skip profile for {model_name}: {reasons()}.")
    bundled = _bundled_path(filename)
    if bundled is not None and (profile := usable(bundled, "bundled")):
        return ResolvedProfile(profile, "bundled", f"Using the skip profile bundled with selfspec for {model_name}: {reasons()}.")
    return ResolvedProfile(None, "none", f"No skip profile for {model_name} ({reasons() or 'none bundled'}); "
                                         f"run `python -m selfspec search` to make one.")


def bundled_profiles() -> list:
    """The profile files shipped inside the package (importlib.resources traversables)."""
    return sorted((f for f in resources.files(BUNDLED_PACKAGE).iterdir() if f.name.endswith(".json")),
                  key=lambda f: f.name)


def _bundled_path(filename: str):
    for path in bundled_profiles():
        if path.name.lower() == filename.lower():
            return path
    return None


def push_profile(path: str | Path, repo_id: str, path_in_repo: str | None = None,
                 revision: str | None = None, create: bool = True) -> str:
    """Validate a profile and upload it (default name: the one `load_profile` looks for). Returns the commit URL."""
    from huggingface_hub import HfApi

    profile = read_profile(path)
    if path_in_repo is None:
        if not profile.model:
            raise ProfileError(f"{path} names no model; give --path-in-repo")
        path_in_repo = profile_filename(profile.model)
    api = HfApi(endpoint=hub_endpoint())
    try:
        if create:
            api.create_repo(repo_id, exist_ok=True)
        info = api.upload_file(path_or_fileobj=str(path), path_in_repo=path_in_repo, repo_id=repo_id,
                               revision=revision, commit_message=f"Skip profile for {profile.model or path_in_repo}")
    except Exception as exc:
        raise ProfileError(f"cannot upload {path} to {repo_id}: {_one_line(exc)}") from None
    return str(getattr(info, "commit_url", info))
