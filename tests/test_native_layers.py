"""The fused draft's C++ layer loop (engine/native_layers.py) against the Python loop it replaces.

The Python loop is itself held to transformers' own modules (test_lowbit.py); here the C++ loop must give
its logits and its cache writes bit for bit, wherever the walk hands it the layers."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from selfspec import DraftModel, SkipProfile
from selfspec.engine import native_layers
from selfspec.engine.architectures import PLAIN_LLAMA_MODEL_TYPES
from selfspec.engine.runtime import Engine
from tiny_models import tiny_model

PLAIN = list(PLAIN_LLAMA_MODEL_TYPES)  # the families whose draft layers are fused
ROOT = Path(__file__).resolve().parents[1]
KERNELS = {"float32": [{"int4": "int4pack-bfloat16", "int8": "int8pack-bfloat16"},
                       {"int4": "int4pack-float32", "int8": "int8pack"}],
           "bfloat16": [{"int4": "int4pack-bfloat16", "int8": "int8pack-bfloat16"}]}


@pytest.fixture(autouse=True)
def no_kernel_cache(monkeypatch):
    monkeypatch.setenv("SELFSPEC_KERNEL_CACHE", "0")


@pytest.fixture(scope="module")
def extension():
    built = native_layers.fused_layers_extension()
    if built is None:
        pytest.fail("the C++ layer loop did not build on this machine (a C++ compiler and ninja are in the set-up)")
    return built


def python_twin(draft: DraftModel) -> DraftModel:
    """The same draft (same weights, same plan) with the Python layer loop."""
    twin = copy.copy(draft)
    twin.walk = copy.copy(draft.walk)
    twin.walk._native = None
    return twin


def cache_contents(cache) -> list:
    return [(layer.keys.clone(), layer.values.clone(), int(layer.cumulative_length)) for layer in cache.layers]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("weights", ["int8", "int4"])
@pytest.mark.parametrize("arch", PLAIN)
def test_the_cpp_loop_computes_the_python_loops_values_bit_for_bit(extension, arch, weights, dtype):
    model = tiny_model(arch).to(getattr(torch, dtype))
    layers = model.config.num_hidden_layers
    engine = Engine(model, choose_kernels=False)
    prompt = torch.tensor([[5, 9, 17, 33, 2, 8, 41, 60, 7]])
    n = prompt.shape[1]
    for kernels in ({kind: name for kind, name in k.items() if kind in ("int8", weights)} for k in KERNELS[dtype]):
        for query_form in ("grouped", "packed"):
            for profile in (SkipProfile(layers), SkipProfile(layers, attn=[1], mlp=[0, 3])):
                draft = DraftModel(model, profile, weights=weights, kernels=kernels | {"attention": query_form})
                assert draft.walk._native is not None, "a fused CPU draft runs the C++ loop"
                reference = python_twin(draft)
                with torch.inference_mode():
                    cache = engine.new_cache(n, 8, 4)
                    engine.full(prompt, 0, cache, last_only=True)
                    for tokens in ([[42]], [[42, 43, 44]]):  # one draft token; copies read in one wider step
                        tokens = torch.tensor(tokens)
                        positions = torch.arange(n, n + tokens.shape[1])[None]
                        outputs = []
                        for which in (draft, reference):
                            outputs.append((which(tokens, positions, cache), cache_contents(cache)))
                            cache.rollback(n)
                        (got, got_cache), (expected, expected_cache) = outputs
                        assert torch.equal(got, expected), (kernels, query_form, profile, tokens)
                        for (k, v, length), (k_ref, v_ref, length_ref) in zip(got_cache, expected_cache):
                            assert torch.equal(k, k_ref) and torch.equal(v, v_ref) and length == length_ref


def test_drafting_takes_the_cpp_loop_once_the_prefill_made_the_cache(extension, monkeypatch):
    model = tiny_model("llama")
    engine = Engine(model, choose_kernels=False)
    draft = DraftModel(model, SkipProfile(4), weights="int4")
    prompt = torch.tensor([[5, 9, 17, 33]])
    with torch.inference_mode():
        cache = engine.new_cache(4, 4)
        expected = engine.draft(python_twin(draft), prompt[:, :1], 0, cache)  # no prefill yet: Python's loop
        cache.rollback(0)
        engine.full(prompt, 0, cache, last_only=True)
        monkeypatch.setattr(type(draft.walk), "_python_layers", lambda *a, **k: pytest.fail("the Python loop ran"))
        logits = engine.draft(draft, prompt[:, -1:], 4, cache)
    assert logits.shape == expected.shape and torch.isfinite(logits).all()


def test_switched_off_the_draft_runs_the_python_loop(monkeypatch):
    monkeypatch.setenv("SELFSPEC_NATIVE", "0")
    draft = DraftModel(tiny_model("llama"), SkipProfile(4), weights="int4")
    assert draft.walk._native is None


FAILED_BUILD = """
import torch
from selfspec import DraftModel, SkipProfile
from selfspec.engine.runtime import Engine
from tiny_models import tiny_model
model = tiny_model("llama")
drafts = [DraftModel(model, SkipProfile(4), weights="int4") for _ in range(2)]
assert all(d.walk._native is None for d in drafts)
engine = Engine(model, choose_kernels=False)
prompt = torch.tensor([[5, 9, 17, 33]])
with torch.inference_mode():
    cache = engine.new_cache(4, 4)
    engine.full(prompt, 0, cache, last_only=True)
    assert torch.isfinite(engine.draft(drafts[0], prompt[:, -1:], 4, cache)).all()
print("drafted")
"""


def test_a_failed_build_says_so_once_and_leaves_the_python_loop(tmp_path):
    """In a process of its own: torch's extension builder remembers every build of a name in its process."""
    env = os.environ | {"SELFSPEC_CACHE": str(tmp_path), "CXX": str(tmp_path / "no-such-compiler"),
                        "SELFSPEC_KERNEL_CACHE": "0",
                        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    run = subprocess.run([sys.executable, "-c", FAILED_BUILD], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "drafted"
    notices = [line for line in run.stderr.splitlines() if line.startswith("selfspec:")]
    assert len([line for line in notices if "could not be built" in line]) == 1, notices


def test_concurrent_drafts_get_what_each_gets_alone(extension):
    """The C++ loop runs without the GIL: two requests drafting at once, each in its own cache, must get
    exactly what each gets alone."""
    model = tiny_model("llama")
    engine = Engine(model, choose_kernels=False)
    draft = DraftModel(model, SkipProfile(4), weights="int4")
    prompts = [torch.tensor([[5, 9, 17, 33, 2]]), torch.tensor([[70, 3, 11, 8, 41]])]

    def chain(prompt, out):
        tokens = []
        with torch.inference_mode():
            cache = engine.new_cache(5, 41)
            engine.full(prompt, 0, cache, last_only=True)
            token = prompt[:, -1:]
            for step in range(40):
                token = engine.draft(draft, token, 5 + step, cache).argmax().view(1, 1)
                tokens.append(int(token))
        out.append(tokens)

    alone = []
    for prompt in prompts:
        chain(prompt, alone)
    together = [[], []]
    threads = [threading.Thread(target=chain, args=(p, out)) for p, out in zip(prompts, together)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [t[0] for t in together] == alone
