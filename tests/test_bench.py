"""The benchmark command end to end on a tiny model, the cost model, and the restricted-vocabulary draft head."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from selfspec import DraftModel, DraftSettings, Sampling, SkipProfile, self_speculative
from selfspec.bench.report import markdown_table
from selfspec.bench.results import AR
from selfspec.bench.runner import bench, build_methods
from selfspec.bench.prompts import CALIBRATION, SUITE, builtin_suite, read_jsonl
from selfspec.engine.metrics import acceptance_per_token
from selfspec.bench.costmodel import (
    bound_for_lengths,
    expected_tokens,
    measure_costs,
    speedup_bound,
)
from selfspec.engine.draft import VocabularyHead
from selfspec.models.loading import LanguageModel
from selfspec.engine.records import StepRecord
from selfspec.bench.vocabulary import choose_vocabulary, read_vocabulary, write_vocabulary
from test_engine import _chi_square_p_value, _exact_second_third, _sampled_second_third, generated, reference
from tiny_models import tiny_model


class CharTokenizer:
    """A stand-in tokenizer for the tiny models: one id per character, no chat template."""

    chat_template = None

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [2 + ord(ch) % 90 for ch in text[:48]]}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(32 + i % 90) for i in ids)


@pytest.fixture(scope="module")
def tiny_lm():
    return LanguageModel(tiny_model("llama", seed=1, num_hidden_layers=6), CharTokenizer(), "tiny-llama")


# --- cost model --------------------------------------------------------------------------------


def test_expected_tokens_is_the_geometric_sum():
    assert expected_tokens(0.0, 4) == 1.0
    assert expected_tokens(1.0, 4) == 5.0
    for a in (0.3, 0.7, 0.95):
        for k in (1, 4, 12):
            assert math.isclose(expected_tokens(a, k), sum(a ** i for i in range(k + 1)))
    with pytest.raises(ValueError):
        expected_tokens(1.5, 4)


def test_speedup_bound_and_its_per_step_form_agree():
    a, c, k = 0.8, 0.3, 4
    v = {n: 1.0 + 0.1 * n for n in range(1, 9)}
    assert math.isclose(speedup_bound(a, c, v[k], k), expected_tokens(a, k) / (k * c + v[k]))
    assert math.isclose(bound_for_lengths(a, c, v, [k] * 7), speedup_bound(a, c, v[k], k))
    mixed = bound_for_lengths(a, c, v, [2, 6])
    assert mixed == pytest.approx((expected_tokens(a, 2) + expected_tokens(a, 6)) / (2 * c + v[2] + 6 * c + v[6]))
    assert bound_for_lengths(a, c, v, []) is None
    # Copies can run wider than the widths measured: the cost in between is a straight line, and
    # past the widest it keeps the average slope from a plain step (1.0 at 0) to the widest (1.6 at 4).
    sparse = {2: 1.2, 4: 1.6}
    assert bound_for_lengths(a, c, sparse, [3]) == pytest.approx(expected_tokens(a, 3) / (3 * c + 1.4))
    assert bound_for_lengths(a, c, sparse, [8]) == pytest.approx(expected_tokens(a, 8) / (8 * c + 1.6 + 4 * 0.15))
    # Copies cost no draft forward, unless the draft's first token vetted them.
    assert bound_for_lengths(a, c, v, [4, 4], [4, 4], [True, False]) == pytest.approx(
        2 * expected_tokens(a, 4) / (c + 2 * v[4]))
    # A free draft with perfect acceptance and free verification gains K+1; a useless draft loses.
    assert speedup_bound(1.0, 0.0, 1.0, 4) == 5.0
    assert speedup_bound(0.0, 0.5, 1.2, 4) < 1.0


def _step(drafted: int, accepted: int) -> StepRecord:
    return StepRecord(1, "speculate", tuple(range(accepted + 1)), drafted, accepted, 0.0, 0.0, 0.0, 0.6)


def test_acceptance_per_token_is_the_geometric_estimate():
    # Two rejections, 6 accepted in all: a = 6 / (6 + 2).
    steps = [_step(4, 4), _step(4, 1), _step(3, 1), StepRecord(0, "prefill", (5,), 0, 0, 0.0, 0.0, 0.0)]
    assert acceptance_per_token(steps) == pytest.approx(6 / 8)
    assert acceptance_per_token([_step(4, 4)]) == 1.0
    assert acceptance_per_token([_step(4, 0)]) == 0.0
    assert acceptance_per_token([]) is None
    # On simulated geometric steps the estimate recovers the true rate.
    rng, a = random.Random(0), 0.7
    sim = []
    for _ in range(4000):
        n = 0
        while n < 5 and rng.random() < a:
            n += 1
        sim.append(_step(5, n))
    assert acceptance_per_token(sim) == pytest.approx(a, abs=0.02)


def test_measure_costs_leaves_the_context_as_it_was(tiny_lm, monkeypatch):
    from selfspec.engine.cache import layer_length
    from selfspec.engine.runtime import Engine

    model = tiny_lm.model
    layers = model.config.num_hidden_layers
    draft = DraftModel(model, SkipProfile(layers, attn=[1, 2, 3], mlp=[2, 3, 4]))
    engine = Engine(model, choose_kernels=False)
    seen = []  # (position of the first token, every layer's cache length) at each forward

    def spy(name):
        real = getattr(engine, name)

        def call(*args, **kwargs):
            tokens_at = 2 if name == "draft" else 1  # draft(draft, token, position, cache)
            start, cache = args[tokens_at], args[tokens_at + 1]
            seen.append((start, [layer_length(cache, i) for i in range(layers)]))
            return real(*args, **kwargs)
        monkeypatch.setattr(engine, name, call)

    for name in ("full", "verify", "draft"):
        spy(name)
    costs = measure_costs(model, draft, list(range(2, 30)), max_k=3, reps=3, engine=engine)
    assert seen[0] == (0, [0] * layers)  # the prompt's prefill
    # Then warm-up and 3 reps of 5 timed forwards (full, draft, K+1 = 2, 3, 4 tokens), each after the
    # same 28-token context in every layer: nothing a timed forward wrote survives it.
    assert seen[1:] == [(28, [28] * layers)] * (4 * 5)
    assert costs.context == 28 and sorted(costs.v) == [1, 2, 3]
    assert costs.full_seconds > 0 and costs.draft_seconds > 0


# --- restricted-vocabulary draft head ----------------------------------------------------------


def test_vocabulary_head_scores_only_its_subset():
    model = tiny_model("qwen2", seed=2)
    subset = [1, 5, 9, 40, 77]
    head = VocabularyHead(model, [9, 1, 77, 40, 5, 5])
    assert head.vocabulary.tolist() == subset
    hidden = torch.randn(1, 3, model.config.hidden_size)
    full = model.get_output_embeddings()(hidden)
    assert torch.allclose(head(hidden), full[..., subset])
    for bad in ([], [-1], [model.config.vocab_size]):
        with pytest.raises(ValueError):
            VocabularyHead(model, bad)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma2"])
def test_vocabulary_head_is_lossless_greedy(arch):
    model = tiny_model(arch, seed=4)
    rng = random.Random(arch)
    # Half the vocabulary, so that the full model often wants a token the draft cannot propose.
    head = VocabularyHead(model, rng.sample(range(96), 48))
    draft = DraftModel(model, SkipProfile(4, attn=[1, 2], mlp=[2]), head)
    for prompt in ([3], [rng.randrange(2, 96) for _ in range(11)]):
        for settings in (DraftSettings(max_draft=3, exit="off"), DraftSettings(max_draft=5, exit="adaptive")):
            records = list(self_speculative(model, prompt, draft, 24, settings=settings))
            assert generated(records) == reference(model, prompt, 24)


def test_vocabulary_head_drafts_only_its_tokens():
    model = tiny_model("llama", seed=5)
    allowed = list(range(10, 60))
    draft = DraftModel(model, SkipProfile(4, attn=[1], mlp=[1]), VocabularyHead(model, allowed))
    from selfspec.engine.decoding import draft_tokens
    from selfspec.engine.cache import new_cache
    from selfspec.engine.decoding import forward_full

    cache = new_cache()
    forward_full(model, torch.tensor([[2, 3, 4]]), 0, cache)
    drafted = draft_tokens(draft, torch.tensor(7), 3, cache, 6, 0.0, Sampling(), None).tokens
    assert len(drafted) == 6 and all(int(t) in allowed for t in drafted)


@pytest.fixture(scope="module")
def small_vocab_model():
    model = tiny_model("llama", vocab_size=5, seed=3)
    model.generation_config.eos_token_id = None
    return model


def test_vocabulary_head_sampling_keeps_the_full_model_distribution(small_vocab_model):
    # The draft can propose only tokens 0, 2 and 3; the full model samples all five.
    model, prompt, sampling, draws = small_vocab_model, [0, 2, 4], Sampling(temperature=1.0), 800
    draft = DraftModel(model, SkipProfile(4, attn=[1, 2, 3], mlp=[0, 2, 3]), VocabularyHead(model, [0, 2, 3]))
    expected = _exact_second_third(model, prompt, sampling) * draws
    observed = _sampled_second_third(model, prompt, draft, sampling, draws)
    assert _chi_square_p_value(observed, expected) > 1e-3
    # Tokens 1 and 4 are never drafted, yet appear as often as the full model samples them.
    pair_has_1_or_4 = torch.tensor([a in (1, 4) or b in (1, 4) for a in range(5) for b in range(5)])
    assert observed[pair_has_1_or_4].sum() > 0.5 * expected[pair_has_1_or_4].sum()


def test_choose_vocabulary_is_deterministic_and_stored_as_plain_json(tiny_lm, tmp_path):
    first = choose_vocabulary(tiny_lm, 40)
    assert first == choose_vocabulary(tiny_lm, 40)
    assert len(first) == 40 and first == sorted(set(first))
    assert 1 in first  # end-of-sequence is always draftable
    seen = {t for text in CALIBRATION[:2] for t in tiny_lm.encode(text)}
    assert seen & set(first)
    path = tmp_path / "vocab.json"
    write_vocabulary(path, first, tiny_lm.name, "test")
    assert read_vocabulary(path) == first
    assert json.loads(path.read_text())["size"] == 40
    with pytest.raises(ValueError):
        choose_vocabulary(tiny_lm, 0)
    path.write_text('{"token_ids": "nope"}')
    with pytest.raises(ValueError):
        read_vocabulary(path)


# --- the suite and the benchmark ---------------------------------------------------------------


def test_builtin_suite_covers_the_spec_bench_categories():
    suite = builtin_suite(2)
    assert {p.category for p in suite} == {"multi-turn", "translation", "summarization", "qa", "math", "rag"}
    assert all(sum(p.category == c for p in suite) == 2 for c in {p.category for p in suite})
    assert all(p.messages[-1]["role"] == "user" for p in SUITE)
    assert not set(CALIBRATION) & {m["content"] for p in SUITE for m in p.messages}
    with pytest.raises(ValueError, match="unknown categories"):
        builtin_suite(1, ("poetry",))


def test_read_jsonl_accepts_prompts_and_chats_and_refuses_junk(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"category": "x", "prompt": "hello"}\n\n'
                    '{"messages": [{"role": "user", "content": "hi"}]}\n')
    prompts = read_jsonl(path)
    assert [p.category for p in prompts] == ["x", "custom"]
    assert prompts[0].messages == ({"role": "user", "content": "hello"},)
    for junk in ("not json", '{"prompt": ""}', '{"messages": [{"role": "assistant", "content": "x"}]}', "[1]"):
        path.write_text(junk + "\n")
        with pytest.raises(ValueError, match="p.jsonl:1"):
            read_jsonl(path)


def test_bench_end_to_end_on_a_tiny_model(tiny_lm, tmp_path, capsys):
    from selfspec.bench.report import write_charts

    tiny_lm.model.generation_config.eos_token_id = None  # fixed lengths: every method makes 12 tokens
    profile = SkipProfile(6, attn=[2, 3], mlp=[3])
    # Fixed lengths (no controller): every self-speculative row drafts, so its costs are all filled in.
    methods = build_methods(tiny_lm, profile, [DraftSettings(max_draft=k, exit="off", controller=False)
                                               for k in (2, 3)],
                            vocabs=[None, list(range(1, 60))],
                            names=["generate", "self-speculative", "prompt-lookup", "early-exit"],
                            prompt_lookup=3, early_exit=3)
    names = [m.name for m in methods]
    assert names[0] == AR and len(names) == 1 + 1 + 4 + 2
    prompts = builtin_suite(1, ("summarization", "qa", "math"))
    rows, detail = bench(tiny_lm, prompts, methods, max_new_tokens=12, reps=2, progress=False)
    assert {(r.method, r.category) for r in rows} == {(n, c) for n in names for c in ("summarization", "qa", "math", "all")}
    for row in rows:
        assert row.new_tokens == 12 * row.prompts and row.tokens_per_second > 0
        assert row.identical, row  # greedy: every method reproduces our autoregressive tokens
        base = next(r for r in rows if r.method == AR and r.category == row.category)
        assert row.speedup == pytest.approx(row.tokens_per_second / base.tokens_per_second)
        assert row.speedup_low <= row.speedup_high  # two repetitions each, so a range
        if row.method.startswith("self-spec"):
            assert 0 <= row.acceptance <= 1 and 1 <= row.mean_accepted_tokens <= 4
            # The numbers' arithmetic is checked on hand-built runs (test_metrics.py); here, that a real
            # run fills them in, and that no step is credited more than K+1 tokens for at least c + v.
            assert row.c > 0 and row.v > 0 and row.bound > 0 and row.efficiency > 0
            k = int(row.method.split("K=")[1].split()[0])
            assert row.c_in_run > 0 and row.v_in_run > 0 and row.decode_speedup > 0 and row.efficiency_in_run > 0
            assert 0 < row.bound_in_run <= (k + 1) / (row.c_in_run + row.v_in_run)
        else:
            assert row.bound is None
    # The cost model was measured for each speculative method and category, with v up to that method's K.
    assert {key for key in detail["costs"]} == {f"{n} | {c}" for n in names if n.startswith("self-spec")
                                               for c in ("summarization", "qa", "math", "all")}
    table = markdown_table(rows)
    assert table.count("\n") == len(rows) + 1 and "| self-spec K=3 V=59 | qa |" in table
    charts = write_charts(rows, tmp_path, "tiny")
    assert {p.name for p in charts} >= {"speedup.html", "bound.html"}
    assert "plotly" in (tmp_path / "speedup.html").read_text()


def test_bench_command_writes_table_json_and_charts(tmp_path, monkeypatch, capsys, tiny_lm):
    import selfspec.cli.bench as bench_module
    from selfspec.cli import main

    monkeypatch.setattr(bench_module, "load_model", lambda *a, **k: tiny_lm)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"category": "a", "prompt": "one two three"}\n{"category": "b", "prompt": "four five"}\n')
    out = tmp_path / "out"
    code = main(["bench", "--prompts", str(prompts), "--max-new-tokens", "6", "--reps", "1", "--attn", "1,2",
                 "--methods", "generate,self-speculative", "--max-draft", "2", "--draft-vocab", "0,50",
                 "--exit", "adaptive,off", "--draft-weights", "full,int8", "--out", str(out), "--no-progress"])
    assert code == 0
    text = capsys.readouterr().out
    assert "| method | category | tok/s | speedup |" in text
    for weights in ("full", "int8"):
        for name in ("K=2", "K=2 V=50"):
            for rule in ("adaptive", "off"):
                assert f"| self-spec {name} {weights} {rule} | all |" in text
    # Under the table: the engine, AR against the floor, c and v per speculative method.
    engine = json.loads((out / "bench.json").read_text())["engine"]
    # the C++ loop runs the full model's layers where they are normed by length (native_layers.full_layers)
    loop = "c++" if engine["forms"]["norms"] == "by length" else "python"
    assert engine["layer_loop"] == loop
    assert f"engine: static cache, compiled off, layers in {loop}; few-row products: rows 1: " in text
    assert "; forms: masked queries: " in text and "; norms: " in text
    assert "ms/token =" in text and "x the floor of" in text and "(linear products," in text
    assert "median of 2 samples between the runs" in text  # one after each prompt's turn: 2 prompts x 1 rep
    assert "self-spec K=2 V=50 int8 off: c=" in text and "v(3)=" in text
    report = json.loads((out / "bench.json").read_text())
    assert report["drafts"]["self-spec K=2 full off"]["draft_extra_bytes"] == 0
    assert report["drafts"]["self-spec K=2 int8 off"]["draft_extra_bytes"] > 0
    assert report["profile"]["attn"] == [1, 2] and report["machine"]["device"]
    assert report["engine"]["cache"] == "static" and "choices" in report["engine"]["products"]
    assert report["engine"]["products"]["extra_bytes"] >= 0
    over = report["overhead"]
    assert over["ar_over_floor"] == pytest.approx(over["ar_ms_per_token"] / over["floor_ms"])
    # v for every width a step may verify: K = 2 drafts, or as many tokens as a step may copy by default.
    widest = max(2, DraftSettings().context_tokens)
    assert set(over["methods"]["self-spec K=2 full off"]["v"]) == {str(n) for n in range(1, widest + 1)}
    assert {r["category"] for r in report["rows"]} == {"a", "b", "all"}
    assert len(read_vocabulary(out / "vocab-50.json")) == 50
    assert (out / "speedup.html").is_file() and (out / "bound.html").is_file()
    assert main(["bench", "--methods", "warp-drive"]) == 2
    assert "unknown methods" in capsys.readouterr().err


def test_methods_sharing_a_draft_each_start_from_their_own_last_run(tiny_lm, monkeypatch):
    from selfspec.bench.runner import ours_self_speculative
    from selfspec.engine.controller import DraftLength

    started = []  # what each run's controller started from (DraftModel.carried)
    monkeypatch.setattr(DraftLength, "start_from", lambda self, carried: started.append(carried))
    draft = DraftModel(tiny_lm.model, SkipProfile(6), weights="int8")
    with_copies, alone = (ours_self_speculative(tiny_lm, name, draft, DraftSettings(max_draft=4, context_tokens=n))
                          for name, n in (("copies", 16), ("alone", 0)))
    ids = [5, 6, 7, 8]
    with_copies.decode(ids, 12)
    left_by_copies = draft.carried
    alone.decode(ids, 12)  # the draft holds what the other method left, but this method has no run of its own
    left_alone = draft.carried
    assert started == [] and left_by_copies is not None and left_alone is not left_by_copies
    with_copies.decode(ids, 12)
    alone.decode(ids, 12)
    assert started == [left_by_copies, left_alone]


def test_the_speedup_range_is_each_repetitions_own_speedup_over_the_same_prompts():
    from selfspec.bench.results import Run, speedup_range

    # Two prompts, three repetitions; the baseline makes 10 tokens a prompt, the method 10 and 20.
    baseline = [Run([0] * 10, 1.0, None, (1.0, 1.2, 0.8)), Run([0] * 10, 2.0, None, (2.0, 2.0, 2.2))]
    method = [Run([0] * 10, 0.5, None, (0.5, 0.4, 0.6)), Run([0] * 20, 1.0, None, (1.5, 1.0, 1.0))]
    # Repetition r: (30 tokens / method seconds) / (20 tokens / baseline seconds).
    by_hand = [(30 / 2.0) / (20 / 3.0), (30 / 1.4) / (20 / 3.2), (30 / 1.6) / (20 / 3.0)]
    assert speedup_range(baseline, method, [0, 1]) == pytest.approx((min(by_hand), max(by_hand)))
    second_alone = [(20 / 1.5) / (10 / 2.0), (20 / 1.0) / (10 / 2.0), (20 / 1.0) / (10 / 2.2)]
    assert speedup_range(baseline, method, [1]) == pytest.approx((min(second_alone), max(second_alone)))
    unknown = [Run([0] * 10, 1.0), Run([0] * 10, 2.0)]  # only medians (a run made before repetitions were kept)
    assert speedup_range(unknown, method, [0, 1]) == (None, None)


def test_a_floor_sampled_at_several_moments_is_their_median():
    from selfspec.bench.floor import Floor, median_floor

    cpu = [Floor(s, "linear products", 100) for s in (0.05, 0.09, 0.06)]
    assert median_floor(cpu) == Floor(0.06, "linear products", 100, None, samples=3)
    gpu = [Floor(0.01, "weight bytes / bandwidth", 100, 3000.0), Floor(0.012, "weight bytes / bandwidth", 100, 2500.0)]
    assert median_floor(gpu) == Floor(0.011, "weight bytes / bandwidth", 100, 2750.0, samples=2)
    with pytest.raises(ValueError):
        median_floor([])


def test_floor_counts_every_linear_weight_once_per_step(tiny_lm):
    from selfspec.bench.floor import linear_layers, measure_floor, weight_bytes

    model = tiny_lm.model
    assert not model.config.tie_word_embeddings
    # Every 2-D weight but the embedding table is a linear layer's (norms are 1-D).
    expected = sum(p.numel() * p.element_size() for n, p in model.named_parameters()
                   if p.dim() == 2 and "embed_tokens" not in n)
    assert weight_bytes(model) == expected
    assert len(linear_layers(model)) == 6 * 7 + 1  # q, k, v, o, gate, up, down per layer, and the lm_head
    floor = measure_floor(model, reps=2)
    assert floor.how == "linear products" and floor.seconds > 0 and floor.weight_bytes == expected
    # Through the engine's tuned shadow (some layers' products swapped) it is the same layers and bytes.
    from selfspec.engine.row_products import ROW_BUCKETS, RowProducts

    head = tuple(model.get_output_embeddings().weight.shape)
    tuned = RowProducts({b: {head: "weight-major"} for b in ROW_BUCKETS}).tuned(model)
    assert len(linear_layers(tuned)) == len(linear_layers(model)) and weight_bytes(tuned) == expected


def test_generate_static_compiled_is_a_method_but_not_a_default(tiny_lm):
    from selfspec.cli import build_parser

    methods = build_methods(tiny_lm, SkipProfile(6), [DraftSettings(max_draft=2, exit="off")], [None],
                            names=["generate-static"], prompt_lookup=3, early_exit=3)
    assert [(m.name, m.compiled) for m in methods] == [(AR, False), ("generate static compiled", True)]
    default = build_parser().parse_args(["bench"]).methods.split(",")
    assert "generate" in default and "generate-static" not in default


def test_gpu_projection_script_runs_on_tiny_shapes(tmp_path, capsys, monkeypatch):
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "gpu_projection.py"
    spec = importlib.util.spec_from_file_location("gpu_projection", path)
    script = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_projection", script)  # its dataclasses look their module up
    spec.loader.exec_module(script)
    assert script.main(["--tiny", "--models", "Llama-2-13B,Llama-2-70B", "--reps", "1", "--max-k", "3",
                        "--acceptance", "0.5,0.9", "--e2e", "Llama-2-13B", "--e2e-k", "2", "--e2e-reps", "1",
                        "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "projection.json").read_text())
    assert result["errors"] == []
    for name in ("Llama-2-13B", "Llama-2-70B"):
        profiles = result["models"][name]
        assert set(profiles) == {"even 25%", "even 45%"}
        for entry in profiles.values():
            assert sorted(entry["costs"]["v"]) == ["1", "2", "3"]
            for a, p in entry["projection"].items():
                assert p["bound"] == max(p["by_k"].values()) and 1 <= p["best_k"] <= 3
    # The deeper model is extrapolated from sublayer costs that add up to one full forward.
    units = result["models"]["Llama-2-70B"]["even 25%"]["extrapolated_from"]
    assert units["rest"] + 8 * (units["attn"] + units["mlp"]) == pytest.approx(1.0)
    for entry in result["models"]["Llama-2-70B"].values():  # c adds up the sublayers the 16-layer profile keeps
        profile = entry["profile"]
        assert profile["num_layers"] == 16
        kept = units["rest"] + (16 - len(profile["attn"])) * units["attn"] + (16 - len(profile["mlp"])) * units["mlp"]
        assert entry["costs"]["c"] == pytest.approx(kept / (units["rest"] + 16 * (units["attn"] + units["mlp"])))
    out = capsys.readouterr().out
    assert "| Llama-2-13B | even 45% |" in out and "| Llama-2-70B * | even 25% |" in out
    assert "End to end: Llama-2-13B" in out and "| self-spec K=2 fixed | all |" in out


def test_the_engine_line_names_the_memory_of_packed_weight_copies():
    from selfspec.bench.report import overhead_lines

    def detail(extra_bytes):
        products = {"chosen": {"rows 6-9": {"96x32": "onednn-packed"}}, "choices": [], "extra_bytes": extra_bytes}
        return {"engine": {"cache": "static", "compiled": "off", "products": products}, "floor": {},
                "overhead": {"ar_ms_per_token": None, "methods": {}}}

    line = overhead_lines(detail(113_246_208))[0]
    assert "rows 6-9: onednn-packed for 96x32" in line and line.endswith("(packed weight copies: 113 MB)")
    assert "packed weight copies" not in overhead_lines(detail(0))[0]


def test_the_engine_line_says_whether_verifications_are_exact_by_rows_where_that_was_checked():
    from selfspec.bench.report import overhead_lines

    def line(exact):
        engine = {"cache": "static", "compiled": "off", "products": {"chosen": {}, "choices": []},
                  "exact_verifications": exact}
        return overhead_lines({"engine": engine, "floor": {}, "overhead": {"ar_ms_per_token": None, "methods": {}}})[0]

    assert line(True).endswith("verifications bit for bit the one-token steps: yes")
    assert "may part from plain decoding's" in line(False)
    assert "bit for bit" not in line(None)  # float32, or a GPU: not checked
