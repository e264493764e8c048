"""Compiled steps: when they are used, that they keep the output exact, and the eager fallback."""

from __future__ import annotations

import time

import pytest
import torch

from selfspec import DraftSettings, SkipProfile, autoregressive, self_speculative
from selfspec.engine.compiled import compile_allowed, compile_setting, padded_width
from selfspec.engine.draft import DraftModel
from selfspec.engine.narrow_linear import onednn_packing_available
from selfspec.engine.row_products import RowProducts, linear_weights
from selfspec.engine.runtime import Engine
from tiny_models import tiny_model

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
PROMPT = [5, 9, 17, 33, 2, 8, 41, 60, 7, 3]


def generated(records) -> list[int]:
    return [t for r in records for t in r.token_ids]


@pytest.fixture(autouse=True)
def _private_caches(monkeypatch, tmp_path):
    monkeypatch.setenv("SELFSPEC_CACHE", str(tmp_path))
    monkeypatch.delenv("SELFSPEC_COMPILE", raising=False)
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)


def test_the_flag_wins_then_the_environment_then_the_device(monkeypatch):
    assert compile_setting(None, CUDA) and not compile_setting(None, CPU)
    monkeypatch.setenv("SELFSPEC_COMPILE", "1")
    assert compile_setting(None, CPU) and not compile_setting(False, CPU)
    monkeypatch.setenv("SELFSPEC_COMPILE", "off")
    assert not compile_setting(None, CUDA) and compile_setting(True, CUDA)


def test_verification_widths_share_few_graphs():
    assert [padded_width(w) for w in range(2, 19)] == [3, 3, 5, 5, 9, 9, 9, 9, 13, 13, 13, 13, 17, 17, 17, 17, None]


def test_a_host_that_forbids_compiling_runs_eager_with_one_notice(monkeypatch, capsys):
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert "ZeroGPU" in compile_allowed(CPU)
    engine = Engine(tiny_model("llama"), compile=True, choose_kernels=False)
    assert engine.steps is None and engine.describe()["compiled"] == "off"
    assert capsys.readouterr().err.count("\n") == 1


def test_a_compiler_that_fails_leaves_the_eager_path_and_exact_tokens(capsys):
    def broken_backend(graph, example_inputs):
        raise RuntimeError("no compiler here")

    model = tiny_model("qwen2")
    expected = model.generate(torch.tensor([PROMPT]), max_new_tokens=12, do_sample=False)[0, 10:].tolist()
    engine = Engine(model, compile=True, choose_kernels=False, compile_backend=broken_backend)
    assert generated(autoregressive(model, PROMPT, 12, engine=engine)) == expected
    assert generated(self_speculative(model, PROMPT, SkipProfile(4, attn=[1]), 12, engine=engine)) == expected
    assert "no compiler here" in engine.describe()["compiled"]["failed"]
    notices = [line for line in capsys.readouterr().err.splitlines() if "failed" in line]
    assert len(notices) == 1


def test_compiled_steps_give_the_full_models_tokens():
    """The one test that really compiles (inductor): a tiny model, three graphs, through the products
    another machine might choose (oneDNN's on packed weights for one row where this build has it; for
    three, weight-major for some shapes and thread-split for the others)."""
    model = tiny_model("llama")
    expected = model.generate(torch.tensor([PROMPT]), max_new_tokens=16, do_sample=False)[0, 10:].tolist()
    engine = Engine(model, compile=True, choose_kernels=False)
    one_row = "onednn-packed" if onednn_packing_available(CPU, torch.float32) else "weight-major"
    engine.use_products(RowProducts({(1, 1): {shape: one_row for shape in linear_weights(model)},
                                     (2, 3): {shape: ("weight-major", "thread-split")[i % 2]
                                              for i, shape in enumerate(linear_weights(model))}}))
    assert generated(autoregressive(model, PROMPT, 16, engine=engine)) == expected
    # Context drafts off: they would verify wider steps (more graphs); this checks the three steps.
    spec = self_speculative(model, PROMPT, SkipProfile(4, attn=[1, 2], mlp=[3]), 16, engine=engine,
                            settings=DraftSettings(max_draft=2, exit="off", context_tokens=0))
    assert generated(spec) == expected
    compiled = engine.describe()["compiled"]
    assert compiled["failed"] is None and set(compiled["compile_seconds"]) == {"one token", "draft token", "verify 3"}


def test_a_host_without_a_compiler_runs_eager(monkeypatch):
    monkeypatch.setenv("PATH", "")  # no c++, g++, cc or gcc to be found
    monkeypatch.delenv("CXX", raising=False)
    assert "compiler" in compile_allowed(CPU) and "none found" in compile_allowed(CPU)


def test_a_step_compiles_once_whatever_tensor_the_caller_passes():
    """Graphs guard on strides and on inference-ness: a slice of a longer tensor, a tensor made
    outside inference mode and one made inside must all reuse the one graph of a step."""
    graphs = []

    def counting_backend(graph, example_inputs):
        graphs.append(graph)
        return graph.forward

    model = tiny_model("llama")
    engine = Engine(model, compile=True, choose_kernels=False, compile_backend=counting_backend)
    n = len(PROMPT)
    cache = engine.new_cache(n, 4)
    engine.full(torch.tensor([PROMPT]), 0, cache)  # the prompt: eager, not compiled
    row = torch.tensor([PROMPT * 2])
    with torch.inference_mode():
        made_inside = torch.tensor([[7]])
    logits = []
    for tokens in (row[:, 3:4], torch.tensor([[7]]), made_inside):
        logits.append(engine.full(tokens, n, cache))
        cache.rollback(n)
    assert len(graphs) == 1
    assert torch.equal(logits[1], logits[2])  # same token, same position: same logits
    compiled = engine.describe()["compiled"]
    assert compiled["failed"] is None and set(compiled["compile_seconds"]) == {"one token"}


def counting_engine(model):
    graphs = []

    def counting_backend(graph, example_inputs):
        graphs.append(graph)
        return graph.forward

    return Engine(model, compile=True, choose_kernels=False, compile_backend=counting_backend), graphs


@pytest.mark.parametrize("product", ["thread-split", "weight-major", "linear"])
def test_a_step_is_one_graph_whatever_product_its_rows_use(product):
    """A graph break inside a product (a call dynamo cannot trace) splits a compiled step into a graph per
    product, each with its own guards and calls: on the Zen 5 such a step ran at 2.2x its product floor."""
    model = tiny_model("llama")
    engine, graphs = counting_engine(model)
    if product != "linear":
        engine.use_products(RowProducts({rows: {shape: product for shape in linear_weights(model)}
                                         for rows in [(1, 1), (2, 3)]}))
    n = len(PROMPT)
    cache = engine.new_cache(n, 4)
    engine.full(torch.tensor([PROMPT]), 0, cache)  # the prompt: eager
    engine.full(torch.tensor([[7]]), n, cache)
    assert len(graphs) == 1
    engine.verify(torch.tensor([[7, 8, 9]]), n + 1, cache)
    assert len(graphs) == 2 and engine.describe()["compiled"]["failed"] is None


def test_warming_up_compiles_every_step_a_request_may_run_so_none_compiles_mid_request():
    model = tiny_model("llama")
    engine, graphs = counting_engine(model)
    draft = DraftModel(model, SkipProfile(4, attn=[1, 2], mlp=[3]))
    settings = DraftSettings(max_draft=4, exit="off", context_tokens=8)  # widths up to 9: buckets 3, 5, 9
    engine.warm_up(len(PROMPT), 16, max(settings.max_draft, settings.context_tokens) + 1, [draft])
    compiled = set(engine.describe()["compiled"]["compile_seconds"])
    assert compiled == {"one token", "draft token", "verify 3", "verify 5", "verify 9"}
    warmed = len(graphs)
    expected = model.generate(torch.tensor([PROMPT * 3]), max_new_tokens=16, do_sample=False)[0, 30:].tolist()
    assert generated(self_speculative(model, PROMPT * 3, draft, 16, settings=settings, engine=engine)) == expected
    assert generated(autoregressive(model, PROMPT * 3, 16, engine=engine)) == expected
    assert len(graphs) == warmed  # same cache size (the prompt fits the same 256 positions): nothing new


def test_a_step_keeps_compiling_past_torchs_default_of_eight_shapes():
    """Each cache size is a shape of its own; a long-lived process meets many. Past torch's default
    recompile limit a new shape would run eager without a word."""
    model = tiny_model("llama")
    engine, graphs = counting_engine(model)
    sizes = 10
    for i in range(sizes):  # requests whose caches round up to 256, 512, ... positions
        engine.warm_up(256 * i + 1, 8)
    assert len(graphs) == sizes and engine.describe()["compiled"]["failed"] is None


def test_the_time_a_step_spent_compiling_is_not_taken_for_its_cost():
    """The controller prices steps by their measured times and leaves them to the next run with the same
    draft; a step that compiled measured the compiler (minutes on a CPU), which would make drafting look
    hopeless to every later request."""
    compile_seconds = 0.5

    def slow_backend(graph, example_inputs):
        time.sleep(compile_seconds)
        return graph.forward

    model = tiny_model("llama")
    engine = Engine(model, compile=True, choose_kernels=False, compile_backend=slow_backend)
    draft = DraftModel(model, SkipProfile(4, attn=[1, 2], mlp=[3]))
    settings = DraftSettings(max_draft=3, exit="off", context_tokens=0, controller=True)
    records = list(self_speculative(model, PROMPT, draft, 16, settings=settings, engine=engine))
    assert engine.compilations >= 3  # one token, draft token, a verification: each compiled mid-run
    assert max(r.draft_seconds + r.verify_seconds for r in records) >= compile_seconds  # the records tell it
    carried = draft.carried
    costs = [carried.full, carried.draft, *carried.verify.values()]
    assert any(c is not None for c in costs)
    assert all(c < compile_seconds / 5 for c in costs if c is not None), carried


def test_inductor_caches_in_ours_unless_the_user_chose_a_folder(monkeypatch, tmp_path):
    import os

    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    from selfspec.engine.compiled import use_inductor_cache_dir

    monkeypatch.setenv("SELFSPEC_CACHE", str(tmp_path))
    ours = str(tmp_path / "inductor")
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    assert use_inductor_cache_dir() == ours == os.environ["TORCHINDUCTOR_CACHE_DIR"]
    # What inductor writes there itself the first time anything asks (loading a model does): not a choice.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", os.path.abspath(default_cache_dir()))
    assert use_inductor_cache_dir() == ours
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert use_inductor_cache_dir() == str(tmp_path / "mine") == os.environ["TORCHINDUCTOR_CACHE_DIR"]
