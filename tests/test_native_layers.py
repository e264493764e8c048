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

from selfspec import DraftModel, DraftSettings, SkipProfile, autoregressive, self_speculative
from selfspec.engine import architectures, lowbit, native_build, native_layers
from selfspec.engine.draft import VocabularyHead
from selfspec.engine.architectures import PLAIN_LLAMA_MODEL_TYPES, PROJECTION_GROUPS, decoder_layers
from selfspec.engine.narrow_linear import bf16_pairs_available, onednn_packing_available
from selfspec.engine.row_products import PREFILL_BUCKET, ROW_BUCKETS, RowProducts
from selfspec.engine.runtime import Engine
from selfspec.engine.walk import LayerWalk
from test_engine import generated
from tiny_models import tiny_model

PLAIN = list(PLAIN_LLAMA_MODEL_TYPES)  # the families whose draft layers are fused
ROOT = Path(__file__).resolve().parents[1]
KERNELS = {"float32": [{"int4": "int4pack-bfloat16", "int8": "int8pack-bfloat16"},
                       {"int4": "int4pack-float32", "int8": "int8pack"},
                       {"int4": "int4-int8dot", "int8": "int8-int8dot"},
                       {"int4": "int4-int8dot-avx2", "int8": "int8-int8dot-avx2"}],
           "bfloat16": [{"int4": "int4pack-bfloat16", "int8": "int8pack-bfloat16"},
                        {"int4": "int4-int8dot", "int8": "int8-int8dot"},
                        {"int4": "int4-int8dot-avx2", "int8": "int8-int8dot-avx2"}]}
EIGHT_BIT_DOT = {"int4": "int4-int8dot", "int8": "int8-int8dot"}


@pytest.fixture(autouse=True)
def no_kernel_cache(monkeypatch):
    monkeypatch.setenv("SELFSPEC_KERNEL_CACHE", "0")


@pytest.fixture(scope="module")
def extension():
    built = native_build.native_extension()
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


def assert_same_forward(native, reference, tokens: torch.Tensor, start: int, cache, context) -> None:
    """Both forwards of `tokens` at `start` give the same logits and leave the same cache, bit for bit (each
    rolled back after)."""
    positions = torch.arange(start, start + tokens.shape[1])[None]
    outputs = []
    for which in (native, reference):
        outputs.append((which(tokens, positions, cache), cache_contents(cache)))
        cache.rollback(start)
    (got, got_cache), (expected, expected_cache) = outputs
    assert torch.equal(got, expected), context
    for (k, v, length), (k_ref, v_ref, length_ref) in zip(got_cache, expected_cache):
        assert torch.equal(k, k_ref) and torch.equal(v, v_ref) and length == length_ref


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
                draft = _aten_twin(draft)  # its loop of ATen operations (the buffers path is tested below)
                with torch.inference_mode():
                    cache = engine.new_cache(n, 8, 4)
                    engine.full(prompt, 0, cache, last_only=True)
                    for tokens in ([[42]], [[42, 43, 44]]):  # one draft token; copies read in one wider step
                        assert_same_forward(draft, reference, torch.tensor(tokens), n, cache,
                                            (kernels, query_form, profile, tokens))


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
from selfspec import DraftModel, DraftSettings, SkipProfile, autoregressive, self_speculative
from selfspec.engine.runtime import Engine
from test_engine import generated
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


def mixed_products(model, dtype: torch.dtype) -> RowProducts:
    """Every product row_products.py offers, spread over the row buckets and shapes, some groups joined."""
    layer = decoder_layers(model)[0]
    q, kv, o = (tuple(getattr(layer.self_attn, n).weight.shape) for n in ("q_proj", "k_proj", "o_proj"))
    gate, down = tuple(layer.mlp.gate_proj.weight.shape), tuple(layer.mlp.down_proj.weight.shape)
    onednn = "onednn-packed" if onednn_packing_available(torch.device("cpu"), dtype) else "weight-major"
    chosen = {(1, 1): {q: "thread-split", kv: "weight-major", gate: "thread-split", down: "onednn"},
              (2, 3): {q: "weight-major", o: "thread-split", kv: "thread-split"},
              (4, 5): {q: onednn, kv: onednn, o: onednn, gate: onednn, down: onednn},
              (6, 9): {kv: "thread-split", down: "weight-major"},
              (14, 17): {o: "thread-split", down: "thread-split"}}
    if bf16_pairs_available(torch.device("cpu"), dtype):
        chosen[(1, 1)][o] = chosen[(6, 9)][o] = chosen[(6, 9)][gate] = "bf16-pairs"
    joined = {(1, 1): ("gate_up_proj",), (6, 9): ("qkv_proj",), (14, 17): ("qkv_proj", "gate_up_proj"),
              PREFILL_BUCKET: ("qkv_proj",)}
    return RowProducts(chosen, joined=joined, joined_product=onednn if onednn != "weight-major" else "linear")


@pytest.fixture
def forms(monkeypatch):
    """The forms the full model's C++ loop makes, whatever this machine's timing would pick (norms by length;
    one query grouped unless a test packs it; several queries grouped under sdpa's boolean mask)."""
    chosen = {"one query": "grouped", "masked queries": "grouped"}
    monkeypatch.setattr(architectures, "exact_rows_required", lambda dtype: False)  # "rows" only where a test asks
    monkeypatch.setattr(architectures, "norm_form", lambda norm: "by length")
    monkeypatch.setattr(architectures, "one_query_form", lambda *a, **k: chosen["one query"])
    monkeypatch.setattr(architectures, "masked_queries_form", lambda *a, **k: chosen["masked queries"])
    return chosen


@pytest.mark.parametrize("threads", [2, 3])  # three: thread-split's slabs leave rows over
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("arch", PLAIN)
def test_the_full_models_cpp_loop_computes_the_python_loops_values_bit_for_bit(extension, forms, arch, dtype,
                                                                               threads):
    assert_cpp_loop_is_the_python_loop(tiny_model(arch).to(getattr(torch, dtype)), forms, threads)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_cpp_loop_is_the_python_loop_at_heads_64_wide(extension, forms, dtype):
    """Heads of 64 (the tiny models' are 8): the C++ rotary's vectorised path."""
    assert_cpp_loop_is_the_python_loop(tiny_model("llama", **WIDE).to(getattr(torch, dtype)), forms, 2)


def assert_cpp_loop_is_the_python_loop(model, forms, threads: int) -> None:
    layers = model.config.num_hidden_layers
    engine = Engine(model, choose_kernels=False)
    prompt = torch.tensor([[5, 9, 17, 33, 2, 8, 41, 60, 7]])
    n = prompt.shape[1]
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for one_query, masked_queries in (("grouped", "grouped"), ("packed", "grouped"), ("rows", "rows")):
            forms["one query"], forms["masked queries"] = one_query, masked_queries
            for products in (mixed_products(model, model.dtype), RowProducts.plain()):
                tuned = products.tuned(model)
                walk = LayerWalk(tuned, model.config, tuned.get_output_embeddings())
                assert type(walk._native).__name__ == "FullLayers"
                for plan in ((), ([1], [0, 3])):  # the engine's forward; a skipping draft's (full weights)
                    native = walk.skipping(*plan) if plan else walk
                    reference = copy.copy(native)
                    reference._native = None
                    with torch.inference_mode():
                        cache = engine.new_cache(n, 17, 17)
                        walk(prompt, torch.arange(n)[None], cache, from_start=True)  # a prefill (in Python)
                        for width in (1, 2, 3, 5, 9, 17):
                            assert_same_forward(native, reference, torch.arange(40, 40 + width)[None], n, cache,
                                                (one_query, products, plan, width))
                # every width's products were ones the C++ loop makes: it ran them all
                assert sorted(walk._native._by_width) == [1, 2, 3, 5, 9, 17]
                assert all(products is not None for products in walk._native._by_width.values())
    finally:
        torch.set_num_threads(previous)
    assert layers == len(decoder_layers(model))


def test_full_forwards_the_cpp_loop_cannot_make_run_in_python(extension, forms, monkeypatch):
    """Several queries under transformers' own attention call ("repeated"), and a prefill (no mask: sdpa's causal
    flag), run the Python loop; one query still runs in C++."""
    forms["masked queries"] = "repeated"
    model = tiny_model("llama")
    engine = Engine(model, choose_kernels=False)
    walk = LayerWalk(model, model.config, model.get_output_embeddings())
    ran = []
    python_layers = LayerWalk._python_layers
    monkeypatch.setattr(LayerWalk, "_python_layers", lambda self, hidden, *a: ran.append(hidden.shape[-2])
                        or python_layers(self, hidden, *a))
    prompt = torch.tensor([[5, 9, 17, 33, 2, 8]])
    with torch.inference_mode():
        cache = engine.new_cache(6, 8, 4)
        walk(prompt, torch.arange(6)[None], cache, from_start=True)
        walk(torch.tensor([[7]]), torch.tensor([[6]]), cache)
        walk(torch.tensor([[7, 8, 9]]), torch.tensor([[7, 8, 9]]), cache)
    assert ran == [6, 3]


def test_each_source_text_builds_in_a_folder_of_its_own(tmp_path, monkeypatch):
    """Two checkouts of different sources on one machine never load each other's build; a header counts too."""
    monkeypatch.setenv("SELFSPEC_CACHE", str(tmp_path / "cache"))
    sources = tmp_path / "csrc"
    sources.mkdir()
    folders = []
    for loops, header in (("// one", "// a"), ("// two", "// a"), ("// one", "// b"), ("// one", "// a")):
        (sources / "loops.cpp").write_text(loops)
        (sources / "products.h").write_text(header)
        folders.append(native_build.extension_dir(sources))
        assert folders[-1].name.endswith(native_build.source_digest(sources))
    assert folders[0] == folders[3] and len(set(folders)) == 3
    assert all(f.parent == tmp_path / "cache" / "extensions" and torch.__version__ in f.name for f in folders)


def _aten_twin(draft: DraftModel) -> DraftModel:
    """The same draft with its C++ loop's one-token path in buffers switched off (the ATen operations' loop)."""
    twin = copy.copy(draft)
    twin.walk = copy.copy(draft.walk)
    twin.walk._native = copy.copy(draft.walk._native)
    twin.walk._native._in_buffers = False
    return twin


@pytest.mark.parametrize("instructions", ["", "-avx2"])
@pytest.mark.parametrize("dtype, tolerance", [("float32", 1e-3), ("bfloat16", 0.05)])
@pytest.mark.parametrize("weights", ["int8", "int4"])
@pytest.mark.parametrize("arch", PLAIN)
def test_the_buffers_path_computes_what_the_aten_loop_computes(extension, arch, weights, dtype, tolerance,
                                                                   instructions):
    """Where every product is an 8-bit dot product, a draft token and a read of copies run in buffers
    (csrc/draft_in_buffers.cpp): the same logits as the loop of ATen operations up to rounding (its stream stays in float32, its attention and
    activations are loops of its own), the same keys and values written at the same position, nothing else in
    the cache touched. Heads 16 wide: two of its 8-lane chunks."""
    model = tiny_model(arch, hidden_size=64, head_dim=16).to(getattr(torch, dtype))
    layers = model.config.num_hidden_layers
    engine = Engine(model, choose_kernels=False)
    short = [5, 9, 17, 33, 2, 8, 41, 60, 7, 11, 90, 3, 14, 15, 92, 65, 35]
    long = [(7 * i + 3) % 94 + 2 for i in range(150)]  # from 64 positions on, each group's positions are split
    with torch.no_grad():  # sharper attention: parts of the positions merged wrongly would show in the logits
        for layer in decoder_layers(model):
            layer.self_attn.q_proj.weight.mul_(6.0)
    previous = torch.get_num_threads()
    for tokens, profile, threads in ((short, SkipProfile(layers), 1), (short, SkipProfile(layers, attn=[1], mlp=[0, 3]), 1),
                                     (long, SkipProfile(layers), 3)):  # three threads: three parts of each group
        prompt, n = torch.tensor([tokens]), len(tokens)
        kernels = {kind: name + instructions for kind, name in EIGHT_BIT_DOT.items() if kind in ("int8", weights)}
        draft = DraftModel(model, profile, weights=weights, kernels=kernels)
        assert draft.walk.layer_loop == "c++ in buffers"
        reference = _aten_twin(draft)
        torch.set_num_threads(threads)
        try:
            with torch.inference_mode():
                cache = engine.new_cache(n, 8, 4)
                engine.full(prompt, 0, cache, last_only=True)
                before = cache_contents(cache)
                outputs = []
                for new_tokens in ([42], [42, 43, 44]):  # a draft token; a read of copies, several rows at once
                    for which in (draft, reference):
                        positions = torch.arange(n, n + len(new_tokens))[None]
                        outputs.append((which(torch.tensor([new_tokens]), positions, cache).float(),
                                        cache_contents(cache)))
                        cache.rollback(n)
        finally:
            torch.set_num_threads(previous)
        for (got, got_cache), (expected, expected_cache) in zip(outputs[::2], outputs[1::2]):
            width = got.shape[-2]
            assert (got - expected).norm() <= tolerance * expected.norm(), (n, profile, width)
            assert torch.equal(got.argmax(-1), expected.argmax(-1))
            for (k, v, length), (k_ref, v_ref, length_ref), (k_0, v_0, _) in zip(got_cache, expected_cache, before):
                assert length == length_ref
                for new, ref, old in ((k, k_ref, k_0), (v, v_ref, v_0)):
                    assert torch.equal(new[:, :, :n], old[:, :, :n])
                    assert torch.equal(new[:, :, n + width:], old[:, :, n + width:])
                    written, expected_rows = new[:, :, n:n + width].float(), ref[:, :, n:n + width].float()
                    assert (written - expected_rows).norm() <= tolerance * expected_rows.norm()


def test_drafts_in_buffers_stay_token_identical():
    """Lossless with the buffers path drafting: greedy output is the full model's, with and without skips."""
    model = tiny_model("llama", hidden_size=64, head_dim=16)
    layers = model.config.num_hidden_layers
    prompt = [5, 9, 17, 33, 2, 8, 41]
    expected = generated(autoregressive(model, prompt, 24))
    for profile in (SkipProfile(layers), SkipProfile(layers, attn=[0, 2], mlp=[1])):
        draft = DraftModel(model, profile, weights="int4", kernels=EIGHT_BIT_DOT)
        assert draft.walk.layer_loop == "c++ in buffers"
        got = generated(self_speculative(model, prompt, draft, 24, settings=DraftSettings(max_draft=4, exit="off")))
        assert got == expected, profile


def _walked_twin(draft: DraftModel) -> DraftModel:
    """The same draft (same weights, same plan) with every token through the walk instead of the one-call path."""
    twin = copy.copy(draft)
    twin.walk = copy.copy(draft.walk)
    twin.walk._token_path = None
    return twin


def _head_kernel(head: str) -> str:
    """`head` in the instructions this CPU has (the AVX2 form where it lacks AVX512-VNNI)."""
    linear = torch.nn.Linear(32, 16, bias=False)
    builders = lowbit.head_builders(lowbit.kernel_builders("int8", torch.float32, torch.device("cpu")),
                                    torch.device("cpu"))
    try:
        builders[head](linear)
        return head
    except RuntimeError:
        return head + "-avx2"


@pytest.mark.parametrize("head", ["int8-int8dot", "int2-screened"])
@pytest.mark.parametrize("dtype, tolerance", [("float32", 1e-3), ("bfloat16", 0.05)])
@pytest.mark.parametrize("arch", PLAIN)
def test_a_draft_token_in_one_call_is_the_walks_token(extension, arch, dtype, tolerance, head):
    """The token path (native_layers.DraftTokenPath: embedding row, layers in buffers, final norm and head in one
    call) gives the walk's logits up to rounding (its stream stays in float32 through the final norm) and writes the
    same keys and values, at positions inside and past its first rotary table (256 rows)."""
    model = tiny_model(arch, hidden_size=64, head_dim=16).to(getattr(torch, dtype))
    layers = model.config.num_hidden_layers
    draft = DraftModel(model, SkipProfile(layers, attn=[1], mlp=[0]), weights="int4",
                       kernels=EIGHT_BIT_DOT | {"head": _head_kernel(head)})
    assert draft.walk._token_path is not None
    walked = _walked_twin(draft)
    engine = Engine(model, choose_kernels=False)
    prompt = torch.tensor([[5, 9, 17, 33, 2, 8, 41, 60, 7, 11, 90, 3]])
    n = prompt.shape[1]
    with torch.inference_mode():
        cache = engine.new_cache(n, 400, 4)
        engine.full(prompt, 0, cache, last_only=True)
        before = cache_contents(cache)
        for position in (n, 255, 256, 300):
            outputs = []
            for which in (draft, walked):
                logits = engine.draft(which, torch.tensor([[42]]), position, cache)
                outputs.append((logits.float().view(-1), cache_contents(cache)))
                cache.rollback(n)
            (got, got_cache), (expected, expected_cache) = outputs
            assert got.dtype == torch.float32 and got.shape == expected.shape == (model.config.vocab_size,)
            assert int(got.argmax()) == int(expected.argmax()), position
            if head == "int8-int8dot":  # a screened head scores its own candidates exactly: compare those alone
                assert (got - expected).norm() <= tolerance * expected.norm(), position
            else:
                assert abs(float(got.max() - expected.max())) <= tolerance * float(expected.abs().max()), position
            for i, ((k, v, length), (k_ref, v_ref, length_ref), (k_0, v_0, length_0)) in enumerate(
                    zip(got_cache, expected_cache, before)):
                assert length == length_ref == length_0 + (i != 1)  # layer 1's attention is skipped
                for new, ref, old in ((k, k_ref, k_0), (v, v_ref, v_0)):
                    assert torch.equal(new[:, :, :n], old[:, :, :n])  # the prompt's entries untouched
                    assert torch.equal(new[:, :, :position], ref[:, :, :position])  # nothing else written
                    written, expected_row = new[:, :, position].float(), ref[:, :, position].float()
                    assert (written - expected_row).norm() <= tolerance * expected_row.norm()
            cache.rollback(n)


def test_the_token_path_runs_only_where_it_makes_the_same_draft():
    """It needs layers in buffers and a head of 8-bit dot products (or screened) without a bias; else the walk."""
    model = tiny_model("llama", hidden_size=64, head_dim=16)
    layers = model.config.num_hidden_layers
    plain = DraftModel(model, SkipProfile(layers), weights="int4", kernels=EIGHT_BIT_DOT | {"head": "int8pack"})
    vocabulary = DraftModel(model, SkipProfile(layers), head=VocabularyHead(model, range(32)), weights="int4",
                            kernels=EIGHT_BIT_DOT)
    torch_products = DraftModel(model, SkipProfile(layers), weights="int4",
                                kernels={"int4": "int4pack-float32", "int8": "int8-int8dot"})
    for draft in (plain, vocabulary, torch_products, DraftModel(model, SkipProfile(layers))):
        assert draft.walk._token_path is None
        assert draft.walk.token_logits(torch.tensor([[3]]), 0, None) is None


# (heads, groups, head_dim): 16 lanes over one chunk; 64-wide heads with all their chunks at once (3 a group) and a
# chunk at a time (9 a group: blocks of 8 heads and 1); 128-wide heads, 6 a group; 96-wide heads (chunks and bfloat16
# pairs counted at run time); 24-wide heads in 8 lanes (AVX2).
ROWS_SHAPES = [(6, 2, 16), (9, 3, 64), (18, 2, 64), (12, 2, 128), (4, 2, 96), (4, 2, 24)]


@pytest.mark.parametrize("eight_lanes", [False, True], ids=["widest lanes", "AVX2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", ROWS_SHAPES)
def test_rows_attention_is_causal_softmax_attention_and_each_row_as_if_alone(extension, dtype, eight_lanes, shape):
    torch.manual_seed(0)
    (heads, groups, head_dim), capacity, scale = shape, 160, 0.25
    keys, values = (torch.randn(1, groups, capacity, head_dim).to(dtype) for _ in range(2))
    query = torch.randn(1, heads, 17, head_dim).to(dtype)
    tolerance = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}[dtype]
    previous = torch.get_num_threads()

    def attend(rows, position, threads):
        torch.set_num_threads(threads)
        return extension.attend_cached_rows(rows, keys, values, position, scale, eight_lanes=eight_lanes)

    try:
        for position in (0, 5, 55, 140):  # rows inside the first 64 positions, and across 64 and 128
            rows = min(17, capacity - position)
            out = attend(query[:, :, :rows], position, threads=2)
            assert out.shape == (1, heads, rows, head_dim) and out.dtype == dtype
            for r in range(rows):
                seen = position + r + 1  # the row's own position and those before it, nothing after
                k, v = (t[0, :, :seen].double().repeat_interleave(heads // groups, 0) for t in (keys, values))
                weights = (torch.einsum("hd,hnd->hn", query[0, :, r].double(), k) * scale).softmax(-1)
                expected = torch.einsum("hn,hnd->hd", weights, v)
                torch.testing.assert_close(out[0, :, r].double(), expected, rtol=tolerance, atol=tolerance)
                for threads in (1, 2, 3):  # the same bits alone, whatever the threads
                    alone = attend(query[:, :, r:r + 1], position + r, threads)
                    assert torch.equal(out[:, :, r:r + 1], alone), (position, r, threads)
    finally:
        torch.set_num_threads(previous)


WIDE = dict(hidden_size=256, intermediate_size=1536, head_dim=64)  # rows long enough for a product to split them


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("arch", PLAIN)
def test_in_16_bits_a_verifications_rows_are_the_steps_they_stand_for_bit_for_bit(extension, arch, dtype):
    model = tiny_model(arch, **WIDE).to(dtype)
    engine = Engine(model)  # kernels chosen: products exact by rows, attention in "rows"
    described = engine.describe()
    assert described["forms"]["one query"] == described["forms"]["masked queries"] == "rows"
    assert described["products"]["rows_exact"] is True and described["exact_verifications"] is True
    assert_verified_rows_are_steps(engine)


@pytest.mark.skipif(not bf16_pairs_available(torch.device("cpu"), torch.bfloat16), reason="no AVX512-BF16 here")
@pytest.mark.parametrize("arch", PLAIN)
def test_with_the_bfloat16_pair_dot_products_everywhere_a_verifications_rows_are_the_steps(extension, arch):
    model = tiny_model(arch, **WIDE).to(torch.bfloat16)
    engine = Engine(model)
    shapes = {tuple(w.shape) for w in (m.weight for m in model.modules() if isinstance(m, torch.nn.Linear))}
    groups = tuple(group for _, group, _ in PROJECTION_GROUPS)
    every = ROW_BUCKETS + (PREFILL_BUCKET,)
    engine.use_products(RowProducts({bucket: dict.fromkeys(shapes, "bf16-pairs") for bucket in every},
                                    joined={bucket: groups for bucket in every[:3]}, joined_product="bf16-pairs"))
    assert_verified_rows_are_steps(engine)


def assert_verified_rows_are_steps(engine: Engine) -> None:
    """A verification of 2-17 positions gives each row exactly the logits of one-token steps over them."""
    prompt = torch.tensor([[5, 9, 17, 33, 2, 8, 41, 60, 7] * 8])  # past 64 positions: the threads split rows
    tokens = torch.randint(2, 96, (1, 17), generator=torch.Generator().manual_seed(1))
    n = prompt.shape[1]
    with torch.inference_mode(), engine.request_cache(n, 20, 17) as cache:
        engine.full(prompt, 0, cache, last_only=True)
        steps = [engine.full(tokens[:, j:j + 1], n + j, cache)[-1].clone() for j in range(17)]
        cache.rollback(n)
        for width in (2, 3, 5, 9, 17):
            verified = engine.verify(tokens[:, :width], n, cache)
            cache.rollback(n)
            for j in range(width):
                assert torch.equal(verified[j], steps[j]), (width, j)


@pytest.mark.parametrize("arch", PLAIN)
def test_in_bfloat16_greedy_self_speculation_is_token_identical_to_plain_decoding(extension, arch):
    model = tiny_model(arch, **WIDE).to(torch.bfloat16)
    model.generation_config.eos_token_id = None
    engine = Engine(model)
    prompt = [5, 6, 7, 8, 9, 5, 6, 7, 8, 9, 5, 6, 40, 41, 42]
    expected = generated(autoregressive(model, prompt, 40, engine=engine))
    for profile in (SkipProfile(4, attn=[1], mlp=[2]), SkipProfile(4)):
        settings = DraftSettings(max_draft=6, exit="off", context_tokens=8)
        assert generated(self_speculative(model, prompt, profile, 40, settings=settings, engine=engine)) == expected
