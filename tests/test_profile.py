"""Profile schema v1: every field validated, round trips, fingerprints, the bundled profiles."""

import copy
import json

import pytest

from selfspec.engine.settings import DraftSettings
from selfspec.profiles.hub import bundled_profiles
from selfspec.profiles.schema import (
    Fingerprint,
    ProfileError,
    SearchInfo,
    SkipProfile,
    fingerprint,
    parse_profile,
    profile_filename,
    read_profile,
    write_profile,
)
from tiny_models import tiny_model


FULL = {
    "schema_version": 1,
    "model": "org/model",
    "num_layers": 4,
    "attn": [3, 1],
    "mlp": [2],
    "decoding": {"max_draft": 3, "exit": "adaptive", "threshold": 0.5, "target_acceptance": 0.85,
                 "draft_weights": "int4"},
    "fingerprint": {"model_type": "llama", "num_layers": 4, "hidden_size": 32, "vocab_size": 96,
                    "architecture": "LlamaForCausalLM", "revision": "abc123"},
    "search": {"method": "greedy", "trials": 12, "seconds": 95.5, "calibration": "builtin",
               "objective": 0.061, "acceptance": 0.7, "mean_accepted_tokens": 2.1, "draft_cost_ratio": 0.6,
               "speedup": 0.93, "device": "cpu", "dtype": "float32", "versions": {"torch": "2.13.0"},
               "date": "2026-11-27T01:00:00+00:00", "complete": True},
    "metadata": {"note": "hello", "nested": {"list": [1, 2.5, None, True]}},
}


def edited(path: str, value=None, delete: bool = False) -> dict:
    """FULL with one (dotted) field replaced or deleted."""
    data = copy.deepcopy(FULL)
    *parents, last = path.split(".")
    target = data
    for key in parents:
        target = target[key]
    if delete:
        del target[last]
    else:
        target[last] = value
    return data


def test_full_profile_round_trips(tmp_path):
    profile = SkipProfile.from_dict(FULL)
    assert profile.attn == (1, 3) and profile.mlp == (2,)
    assert profile.decoding == DraftSettings(3, "adaptive", 0.5, 0.85, draft_weights="int4")
    assert profile.fingerprint.revision == "abc123" and profile.search.trials == 12
    write_profile(profile, tmp_path / "p.json")
    again = read_profile(tmp_path / "p.json")
    assert again.to_dict() == profile.to_dict()
    assert again.to_dict()["attn"] == [1, 3]
    assert not list(tmp_path.glob("*.partial"))  # the atomic write left nothing behind


def test_minimal_profile_gets_schema_version_and_no_optional_parts():
    data = SkipProfile(4, attn=[1]).to_dict()
    assert data == {"schema_version": 1, "model": "", "num_layers": 4, "attn": [1], "mlp": []}
    assert SkipProfile.from_dict(data) == SkipProfile(4, attn=[1])


def test_pre_v1_files_keep_their_extra_keys_as_metadata():
    profile = SkipProfile.from_dict({"num_layers": 4, "attn": [0], "mlp": [], "note": "old"})
    assert profile.metadata == {"note": "old"}


@pytest.mark.parametrize("path,value,message", [
    ("schema_version", 2, "schema_version 2 is not supported"),
    ("model", 5, "model must be a string"),
    ("num_layers", True, "num_layers must be a positive integer"),
    ("attn", [0, 4], "out of range"),
    ("mlp", [-1], "out of range"),
    ("attn", [1, 1], "more than once"),
    ("mlp", "1,2", "must be a list"),
    ("attn", [1.0], "non-integer"),
    ("decoding", [3], "decoding must be a JSON object"),
    ("decoding.max_draft", 0, "decoding.max_draft must be an integer >= 1"),
    ("decoding.exit", "sometimes", "decoding.exit must be"),
    ("decoding.draft_weights", "int3", "decoding.draft_weights must be"),
    ("decoding.threshold", 1.5, r"decoding.threshold must be a number in \[0.0, 1.0\]"),
    ("decoding.target_acceptance", "high", "decoding.target_acceptance must be a number"),
    ("decoding.speed", 1, "decoding has unknown field"),
    ("fingerprint.model_type", 7, "fingerprint.model_type must be a string"),
    ("fingerprint.num_layers", 5, "differs from num_layers"),
    ("fingerprint.hidden_size", 0, "fingerprint.hidden_size must be an integer >= 1"),
    ("fingerprint.vocab_size", "96", "fingerprint.vocab_size must be an integer"),
    ("fingerprint.architecture", ["x"], "fingerprint.architecture must be a string"),
    ("fingerprint.revision", 3, "fingerprint.revision must be a string"),
    ("search.method", "", "search.method must be a non-empty string"),
    ("search.trials", -1, "search.trials must be an integer >= 0"),
    ("search.seconds", float("nan"), "search.seconds must be a number"),
    ("search.calibration", 1, "search.calibration must be a string"),
    ("search.objective", -0.1, "search.objective must be a number"),
    ("search.acceptance", 1.2, "search.acceptance must be a number in"),
    ("search.mean_accepted_tokens", "2", "search.mean_accepted_tokens must be a number"),
    ("search.draft_cost_ratio", -1, "search.draft_cost_ratio must be a number"),
    ("search.speedup", 0, "search.speedup must be positive"),
    ("search.device", 1, "search.device must be a string"),
    ("search.dtype", None, None),  # optional fields may be null
    ("search.versions", {"torch": 2}, "search.versions must map"),
    ("search.date", "yesterday", "search.date must be an ISO 8601 date"),
    ("search.complete", "yes", "search.complete must be true or false"),
    ("search.extra", 1, "search has unknown field"),
    ("search.weights", [1], "search.weights must be a JSON object"),
    ("search.weights", {"int3": {}}, "search.weights has unknown draft weights 'int3'; known: full, int8, int4"),
    ("search.weights", {"auto": {}}, "search.weights has unknown draft weights 'auto'"),  # a search measures real weights
    ("search.weights", {"int8": 0.9}, "search.weights.int8 must be a JSON object"),
    ("search.weights", {"int8": {"speedup": "fast"}}, "search.weights.int8.speedup must be a number"),
    ("search.weights", {"int4": {"colour": 1}}, "search.weights.int4 has unknown field 'colour'"),
    ("search.weights", {"int4": {"note": 3}}, "search.weights.int4.note must be a string"),
    ("search.weights", {"full": {"speedup": 0.9, "c": None}, "int4": {"extra_bytes": 10, "note": "over"}}, None),
    ("metadata", [1], "metadata must be a JSON object"),
    ("metadata.x", float("inf"), "metadata.x must be plain JSON data"),
    ("surprise", 1, "unknown field.*surprise.*metadata"),
])
def test_every_field_is_validated(path, value, message):
    data = edited(path, value)
    if message is None:
        SkipProfile.from_dict(data)
        return
    with pytest.raises(ProfileError, match=message):
        SkipProfile.from_dict(data)


@pytest.mark.parametrize("path,message", [
    ("num_layers", "missing field"),
    ("attn", "missing field"),
    ("fingerprint.vocab_size", "fingerprint is missing field.*vocab_size"),
    ("search.method", "search is missing field.*method"),
])
def test_missing_required_fields(path, message):
    with pytest.raises(ProfileError, match=message):
        SkipProfile.from_dict(edited(path, delete=True))


@pytest.mark.parametrize("text,message", [
    ("{", "not valid JSON"),
    ("", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ('{"num_layers": 4, "attn": [], "mlp": [], "schema_version": 1, "num_layers": 4', "not valid JSON"),
])
def test_malformed_json(text, message):
    with pytest.raises(ProfileError, match=message):
        parse_profile(text)


def test_read_profile_names_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(edited("attn", [9])))
    with pytest.raises(ProfileError, match="bad.json: attn layer index 9 is out of range"):
        read_profile(bad)
    binary = tmp_path / "pickle.json"
    binary.write_bytes(b"\x80\x04\x95\xff")
    with pytest.raises(ProfileError, match="not UTF-8"):
        read_profile(binary)
    with pytest.raises(ProfileError, match="cannot read profile"):
        read_profile(tmp_path / "missing.json")


def test_fingerprint_of_a_model_and_the_wrong_model_is_refused_unless_forced():
    llama, qwen = tiny_model("llama"), tiny_model("qwen2")
    fp = fingerprint(llama)
    assert (fp.model_type, fp.num_layers, fp.hidden_size, fp.vocab_size) == ("llama", 4, 32, 96)
    assert fp.architecture == "LlamaForCausalLM"
    profile = SkipProfile(4, attn=[1], fingerprint=fp, model="tiny-llama")
    profile.check_model(llama)
    with pytest.raises(ProfileError, match="searched on another model.*model_type: llama vs qwen2.*--force-profile"):
        profile.check_model(qwen)
    profile.check_model(qwen, force=True)
    wider = tiny_model("llama", vocab_size=128)
    with pytest.raises(ProfileError, match="vocab_size: 96 vs 128"):
        profile.check_model(wider)
    deeper = tiny_model("llama", num_hidden_layers=6)
    with pytest.raises(ProfileError, match="4 layers.*has 6"):  # no forcing past the layer count
        profile.check_model(deeper, force=True)
    # A different revision of the same shape is the same model for a skip set.
    SkipProfile(4, fingerprint=Fingerprint("llama", 4, 32, 96, revision="other")).check_model(llama)


def test_profile_filename():
    assert profile_filename("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB--SmolLM2-135M-Instruct.json"


PAPER = {  # model -> (attention count, MLP count) in the paper's release
    "meta-llama/Llama-2-13b-hf": (24, 10), "meta-llama/Llama-2-13b-chat-hf": (24, 10),
    "codellama/CodeLlama-13b-hf": (22, 12), "meta-llama/Llama-2-70b-hf": (47, 37),
}


def test_bundled_profiles_are_valid_and_named_after_their_model():
    paths = bundled_profiles()  # what the package ships, found as package data
    assert len(paths) >= 4
    for path in paths:
        profile = read_profile(path)
        assert path.name == profile_filename(profile.model)
        assert profile.fingerprint is not None and profile.search is not None and profile.decoding is not None
        # Every one says which draft weights to use: the paper's published skip sets its full-weight draft;
        # ours, searched before the weights were, the choice measured at load (auto).
        assert profile.decoding.draft_weights == ("full" if profile.model in PAPER else "auto"), path.name
        if profile.model in PAPER:
            assert (len(profile.attn), len(profile.mlp)) == PAPER[profile.model]
            assert "dilab-zju/self-speculative-decoding" in profile.metadata["source"]
        else:  # searched by selfspec: its measured numbers are recorded
            s = profile.search
            assert s.complete and s.trials and s.seconds and s.objective and s.speedup and s.acceptance is not None
            assert s.device and s.dtype and s.date and "torch" in s.versions


def test_search_info_and_decoding_defaults():
    assert SearchInfo("bayes").complete is True
    assert DraftSettings.from_profile(SkipProfile(4)) == DraftSettings()  # no recommendation: the defaults


def test_settings_from_a_profile_keep_its_recommendation_except_what_is_overridden():
    recommended = DraftSettings(max_draft=2, exit="fixed", threshold=0.3, target_acceptance=0.8)
    profile = SkipProfile(4, attn=[1], decoding=recommended)
    assert DraftSettings.from_profile(profile) == recommended
    assert DraftSettings.from_profile(profile, max_draft=None, exit=None) == recommended  # None: not given
    assert DraftSettings.from_profile(profile, max_draft=6, exit="off") == DraftSettings(6, "off", 0.3, 0.8)
    with pytest.raises(TypeError, match="unknown decoding setting"):
        DraftSettings.from_profile(profile, gamma=0.5)
    with pytest.raises(ValueError, match="max_draft must be an integer >= 1"):
        DraftSettings.from_profile(profile, max_draft=0)
