"""Profiles on the Hub: the real huggingface_hub client over HTTP against a loopback Hub (tests/hub_server.py)."""

import argparse
import json
import socket

from dataclasses import replace

import pytest

from selfspec.cli import main
from selfspec.cli.options import profile_from
from selfspec.profiles.hub import fetch_profile, load_profile, parse_hub_ref, push_profile
from selfspec.models.loading import LanguageModel
from selfspec.profiles.schema import ProfileError, SkipProfile, fingerprint, write_profile
from tiny_models import tiny_model

MODEL = "tiny-org/tiny-llama"
FILE = "tiny-org--tiny-llama.json"
REPO = "me/skip-profiles"


@pytest.fixture
def hub(loopback_hub, monkeypatch):
    """The loopback Hub (conftest.py), with the profile repo set to REPO."""
    monkeypatch.setenv("SELFSPEC_PROFILE_REPO", REPO)
    return loopback_hub


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


def profile_file(tmp_path, model, attn=(1,), name="p.json"):
    path = tmp_path / name
    write_profile(SkipProfile(4, attn=list(attn), model=MODEL, fingerprint=fingerprint(model)), path)
    return path


def unreachable(monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")


def test_push_then_load_from_the_hub(hub, tmp_path, model):
    url = push_profile(profile_file(tmp_path, model), REPO)
    assert url.startswith(f"{hub.url}/{REPO}/commit/")
    assert json.loads(hub.repos[REPO].files("main")[FILE])["attn"] == [1]  # named after the model
    writes = [r for r in hub.requests if r[0] == "POST"]
    assert writes and all(auth == "Bearer secret-token" for _, _, auth in writes)  # the usual token
    resolved = load_profile(MODEL, 4, model=model)
    assert resolved.source == "hub" and resolved.profile.attn == (1,)
    assert REPO in resolved.notice


def test_hub_reference_with_revision(hub, tmp_path, model):
    old = hub.put("someone/profiles", "dir/p.json", profile_file(tmp_path, model, attn=[0]).read_bytes())
    hub.put("someone/profiles", "dir/p.json", profile_file(tmp_path, model, attn=[2]).read_bytes())
    assert fetch_profile("hub:someone/profiles/dir/p.json").attn == (2,)
    assert fetch_profile(f"hub:someone/profiles/dir/p.json@{old}").attn == (0,)
    with pytest.raises(ProfileError, match="cannot fetch profile.*EntryNotFound|cannot fetch profile.*not found"):
        fetch_profile("hub:someone/profiles/dir/missing.json")


def test_offline_and_unreachable_fall_back_to_the_cache_then_bundled(hub, tmp_path, model, monkeypatch):
    hub.put(REPO, FILE, profile_file(tmp_path, model, attn=[3]).read_bytes())
    assert load_profile(MODEL, 4).source == "hub"  # now cached by huggingface_hub
    hub.put(REPO, FILE, profile_file(tmp_path, model, attn=[0]).read_bytes())

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = load_profile(MODEL, 4)
    assert offline.source == "cache" and offline.profile.attn == (3,)
    assert "HF_HUB_OFFLINE=1" in offline.notice
    assert fetch_profile(f"hub:{REPO}/{FILE}").attn == (3,)  # explicit references use the cache too

    monkeypatch.delenv("HF_HUB_OFFLINE")
    unreachable(monkeypatch)
    down = load_profile(MODEL, 4)
    assert down.source == "cache" and "cannot be reached" in down.notice

    # Nothing cached for a model, but a profile is bundled with selfspec: that one, with the notice.
    bundled = load_profile("meta-llama/Llama-2-13b-hf", 40)
    assert bundled.source == "bundled" and len(bundled.profile.attn) == 24
    assert "bundled" in bundled.notice and "cannot be reached" in bundled.notice
    nothing = load_profile("nobody/nothing", 4)
    assert nothing.source == "none" and nothing.profile is None and "selfspec search" in nothing.notice


def test_a_profile_that_does_not_fit_is_passed_over(hub, tmp_path, model):
    hub.put(REPO, FILE, profile_file(tmp_path, model).read_bytes())
    wrong = load_profile(MODEL, 6)
    assert wrong.source == "none" and "6" in wrong.notice and "Hub profile was not used" in wrong.notice
    other = tiny_model("qwen2")
    assert load_profile(MODEL, 4, model=other).source == "none"


def test_missing_repo_on_a_reachable_hub_uses_bundled(hub):
    resolved = load_profile("meta-llama/Llama-2-70b-hf", 80)
    assert resolved.source == "bundled" and f"{REPO} has no profile" in resolved.notice


def test_cli_profile_options(hub, tmp_path, model, capsys):
    lm = LanguageModel(model=model, tokenizer=None, name=MODEL)
    args = argparse.Namespace(profile=None, attn=None, mlp=None, force_profile=False)
    assert profile_from(args, lm) == SkipProfile.none(4, model=MODEL)  # nothing anywhere: skip nothing
    assert "No skip profile" in capsys.readouterr().err
    hub.put(REPO, FILE, profile_file(tmp_path, model, attn=[2]).read_bytes())
    assert profile_from(args, lm).attn == (2,)  # the default profile comes from the Hub
    assert "from the Hub" in capsys.readouterr().err
    args.profile = f"hub:{REPO}/{FILE}"
    assert profile_from(args, lm).attn == (2,)
    # A profile searched on another model is refused unless forced.
    other = tmp_path / "other.json"
    write_profile(SkipProfile(4, attn=[1], model="q", fingerprint=fingerprint(tiny_model("qwen2"))), other)
    args.profile = str(other)
    with pytest.raises(ProfileError, match="another model"):
        profile_from(args, lm)
    args.force_profile = True
    assert profile_from(args, lm).attn == (1,)


def test_push_profile_command(hub, tmp_path, model, capsys):
    path = profile_file(tmp_path, model)
    assert main(["push-profile", str(path), "--repo", "me/new", "--path-in-repo", "x/y.json"]) == 0
    assert "uploaded" in capsys.readouterr().out and "x/y.json" in hub.repos["me/new"].files("main")
    hub.token = "another-token"  # the client's token is now wrong: one clear line
    assert main(["push-profile", str(path), "--repo", "me/new"]) == 2
    assert capsys.readouterr().err.startswith("error: cannot upload")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert main(["push-profile", str(bad)]) == 2  # validated before anything is sent
    assert "not valid JSON" in capsys.readouterr().err


@pytest.mark.parametrize("ref,expected", [
    ("hub:a/b/c.json", ("a/b", "c.json", None)),
    ("hub:a/b/d/c.json@v1", ("a/b", "d/c.json", "v1")),
])
def test_parse_hub_ref(ref, expected):
    assert parse_hub_ref(ref) == expected


@pytest.mark.parametrize("ref", ["hub:a/b", "hub:a", "hub:a/b/c.json@"])
def test_bad_hub_refs(ref):
    with pytest.raises(ProfileError, match="hub:<owner>/<repo>/<path>"):
        parse_hub_ref(ref)


def test_generate_uses_the_profiles_recommended_settings_unless_overridden():
    from selfspec.cli import build_parser
    from selfspec.cli.options import draft_settings_from
    from selfspec.engine.settings import DraftSettings

    recommended = DraftSettings(max_draft=2, exit="fixed", threshold=0.3)
    profile = SkipProfile(4, attn=[1], decoding=recommended)

    def settings(*flags, profile=profile):
        return draft_settings_from(build_parser().parse_args(["generate", "--prompt", "hi", *flags]), profile)

    # Draft length and exit rule come from the profile; the controller is on unless --no-controller.
    assert settings() == replace(recommended, controller=True)
    assert settings("--no-controller") == replace(recommended, controller=False)
    assert settings(profile=SkipProfile(4)) == DraftSettings(controller=True)  # no recommendation: the defaults
    assert settings("--max-draft", "5") == DraftSettings(5, "fixed", 0.3, controller=True)  # the command line wins
    assert settings("--adaptive").exit == "adaptive"
    assert settings("--no-adaptive") == DraftSettings(2, "off", 0.3, controller=True)
    assert settings("--no-adaptive", "--threshold", "0.5") == DraftSettings(2, "fixed", 0.5, controller=True)
