"""The app's model choice: the owner's preset, the default per device, typed ids guarded, a bounded shelf."""

import pytest
import torch

from selfspec.models.guard import ModelRefused
from selfspec.ui.model_choice import DEFAULT_LABEL, ModelShelf, default_choice, front_matter_models, preset_models
from tiny_models import save_tiny


@pytest.fixture
def readme(tmp_path):
    path = tmp_path / "README.md"
    path.write_text("---\ntitle: x\nmodels:\n  - HuggingFaceTB/SmolLM2-135M-Instruct\n  - Qwen/Qwen2.5-7B-Instruct\n"
                    "---\n# body\n---\nnot front matter\n")
    return path


def test_the_preset_is_the_environment_else_the_front_matter(readme, monkeypatch):
    monkeypatch.delenv("SELFSPEC_MODELS", raising=False)
    assert front_matter_models(readme) == ["HuggingFaceTB/SmolLM2-135M-Instruct", "Qwen/Qwen2.5-7B-Instruct"]
    assert preset_models(readme) == ["Qwen/Qwen2.5-7B-Instruct"]  # the embedded default is listed apart
    monkeypatch.setenv("SELFSPEC_MODELS", " a/b, c/d ,a/b,")
    assert preset_models(readme) == ["a/b", "c/d"]
    monkeypatch.setenv("SELFSPEC_MODELS", "")  # set but empty: no preset at all
    assert preset_models(readme) == []
    assert front_matter_models(readme.with_name("missing.md")) == []


def test_the_default_is_the_first_preset_on_a_gpu_and_the_embedded_model_on_the_cpu(monkeypatch):
    for name in ("SELFSPEC_DEVICE", "SPACES_ZERO_GPU"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_choice(["Qwen/Qwen2.5-7B-Instruct"]) == DEFAULT_LABEL
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 9))
    assert default_choice(["Qwen/Qwen2.5-7B-Instruct"]) == "Qwen/Qwen2.5-7B-Instruct"
    assert default_choice([]) == DEFAULT_LABEL


def test_the_shelf_keeps_the_default_and_the_latest_and_refuses_typed_ids_unchecked(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFSPEC_DTYPE", "float32")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    dirs = [str(save_tiny(tmp_path / f"m{i}", seed=i)) for i in range(3)]
    prepared = []
    shelf = ModelShelf(dirs, pinned=dirs[0], prepare=lambda lm: prepared.append(lm.name), keep=2)
    first = shelf.get(dirs[0])
    assert shelf.get(dirs[0]) is first and prepared == [dirs[0]]  # loaded and warmed once
    shelf.get(dirs[1])
    shelf.get(dirs[2])
    assert shelf.loaded == [dirs[0], dirs[2]]  # the pinned default stays; the older other one is dropped
    with pytest.raises(ModelRefused, match="cannot check someone/some-model on the Hub"):
        shelf.get("someone/some-model")
    with pytest.raises(ModelRefused, match="is not a Hub model id"):
        shelf.get(str(save_tiny(tmp_path / "unlisted")))  # a directory not in the preset: typed by a visitor
    assert shelf.loaded == [dirs[0], dirs[2]]


def test_zero_gpu_duration_grows_with_the_token_budget_and_is_capped():
    from selfspec.ui.zero_gpu import MAX_SECONDS, race_seconds

    short, long = race_seconds("hi", "m", None, 16), race_seconds(prompt="hi", max_new_tokens=1024)
    assert 0 < short < long <= MAX_SECONDS
    assert race_seconds("hi", "m", None, 10**9) == MAX_SECONDS
    assert race_seconds("hi", "m", None, "junk") == race_seconds("hi", "m", None, 96)  # bad input: the form refuses it


def test_the_device_note_says_when_compiling_is_refused(tmp_path, monkeypatch):
    from selfspec.models.loading import load_model
    from selfspec.ui.model_choice import device_note

    lm = load_model(str(save_tiny(tmp_path / "m")), dtype="float32")
    monkeypatch.setenv("SELFSPEC_COMPILE", "1")  # compiling wanted (the default on CUDA)
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert device_note(lm) == "Runs in float32 on cpu, as asked. Eager, not compiled: ZeroGPU allows no torch.compile (ahead-of-time compiled graphs only)."
    monkeypatch.setenv("SELFSPEC_COMPILE", "0")  # not wanted: nothing to say
    assert device_note(lm) == "Runs in float32 on cpu, as asked."


def test_on_a_space_the_race_asks_zero_gpu_for_its_duration(monkeypatch):
    import sys
    import types

    from selfspec.ui.zero_gpu import gpu_call, race_seconds

    asked = {}

    def GPU(duration):  # what the `spaces` package offers on a Space
        def mark(fn):
            asked["duration"], asked["fn"] = duration, fn
            return fn
        return mark

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=GPU))

    def compare(prompt, model, profile_file, max_new_tokens):
        return max_new_tokens

    assert gpu_call(compare) is compare and asked == {"duration": race_seconds, "fn": compare}
    monkeypatch.setitem(sys.modules, "spaces", None)  # `import spaces` raises ImportError: not on a Space
    asked.clear()
    assert gpu_call(compare) is compare and asked == {}


def test_the_shelf_builds_each_draft_once_and_auto_stays_lossless(tmp_path, monkeypatch):
    from selfspec.engine.decoding import autoregressive, self_speculative
    from selfspec.engine.settings import DraftSettings
    from selfspec.profiles.schema import SkipProfile

    monkeypatch.setenv("SELFSPEC_DTYPE", "float32")
    monkeypatch.setenv("SELFSPEC_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SELFSPEC_DRAFT_WEIGHTS", raising=False)
    path = str(save_tiny(tmp_path / "m"))
    shelf = ModelShelf([path], pinned=path)
    lm = shelf.get(path)
    profile = SkipProfile(4, attn=[1], mlp=[2])
    draft, note = shelf.draft(lm, profile, DraftSettings())
    assert "chosen automatically on this device (predicted bounds:" in note
    assert shelf.draft(lm, profile, DraftSettings()) == (draft, note)  # built once
    prompt = lm.encode("The sky is", raw=True)
    ar = [t for r in autoregressive(lm.model, prompt, 16) for t in r.token_ids]
    assert [t for r in self_speculative(lm.model, prompt, draft, 16) for t in r.token_ids] == ar
    monkeypatch.setenv("SELFSPEC_DRAFT_WEIGHTS", "int8")
    int8, note = shelf.draft(lm, profile, DraftSettings())
    assert int8.weights == "int8" and int8.extra_bytes > 0
    assert f"{int8.extra_bytes / 1e6:.1f} MB ({int8.extra_bytes:,} bytes) of low-bit weights beside the model" in note
    monkeypatch.setenv("SELFSPEC_DRAFT_WEIGHTS", "int3")
    with pytest.raises(ValueError, match="SELFSPEC_DRAFT_WEIGHTS must be one of"):
        shelf.draft(lm, profile, DraftSettings())


def test_on_zero_gpu_a_model_typed_at_request_time_is_loaded_outside_the_gpu_call(tmp_path, monkeypatch):
    """ZeroGPU lends the GPU per @spaces.GPU call, to weights moved to cuda outside the calls: a model
    chosen by a visitor must be loaded (once) before the call, and only the race run inside it."""
    import importlib.util
    import sys
    import types
    from pathlib import Path

    from selfspec.engine.decoding import autoregressive
    from selfspec.models.loading import load_model
    from selfspec.ui import model_choice

    path = str(save_tiny(tmp_path / "typed"))
    for name, value in {"SPACES_ZERO_GPU": "true", "SELFSPEC_DEVICE": "cpu", "SELFSPEC_DTYPE": "float32",
                        "SELFSPEC_MODELS": path, "SELFSPEC_DRAFT_WEIGHTS": "full", "HF_HUB_OFFLINE": "1",
                        "SELFSPEC_CACHE": str(tmp_path / "cache")}.items():
        monkeypatch.setenv(name, value)
    lent = []  # non-empty while a call holds the GPU
    calls = []

    def GPU(duration):  # the `spaces` package on a ZeroGPU Space: a GPU only for the call
        def mark(fn):
            def on_gpu(*args, **kwargs):
                calls.append(duration(*args, **kwargs))
                lent.append(True)
                try:
                    yield from fn(*args, **kwargs)
                finally:
                    lent.pop()
            return on_gpu
        return mark

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=GPU))
    loads, races = [], []
    monkeypatch.setattr(model_choice, "load_model", lambda name: loads.append(bool(lent)) or load_model(name))
    spec = importlib.util.spec_from_file_location("app_on_zero_gpu", Path(__file__).parents[1] / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)  # a fresh app.py, as the Space starts it
    start_race = app.start_race
    monkeypatch.setattr(app, "start_race", lambda *a, **k: races.append(bool(lent)) or start_race(*a, **k))

    for _ in range(2):  # two visitors ask for the same typed model
        *_, final = app.compare("The sky is", path, None, 8, "greedy", 0.7, 0.9, 0, 4, True, "full", True)
        result = final[-1]
    assert loads == [False], "loaded once, outside the GPU call"
    assert races == [True, True] and len(calls) == 2, "every race inside the GPU call"
    lm = app.get_model(path)
    prompt = lm.encode("The sky is")
    expected = [t for r in autoregressive(lm.model, prompt, 8) for t in r.token_ids]
    assert result["self_speculative"]["token_ids"] == result["autoregressive"]["token_ids"] == expected
