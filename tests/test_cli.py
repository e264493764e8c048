"""`python -m selfspec generate`: JSON report, local model directories, and clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from selfspec.cli import main

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, smollm2) -> Path:
    """A small random Llama saved with save_pretrained, with SmolLM2's tokenizer: a real local model dir."""
    tokenizer = smollm2.tokenizer
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "selfspec", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_json_compare_on_a_local_directory(model_dir):
    result = run_cli("generate", "--model", str(model_dir), "--prompt", "Tell me a story.", "--dtype", "float32",
                     "--attn", "1,2", "--mlp", "3", "--max-new-tokens", "20", "--compare", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["model"] == str(model_dir)
    assert report["profile"]["attn"] == [1, 2] and report["profile"]["mlp"] == [3]
    ar, spec = report["autoregressive"], report["self_speculative"]
    for side in (ar, spec):
        assert set(side) >= {"token_ids", "text", "seconds", "tokens_per_second"}
        assert 0 < len(side["token_ids"]) <= 20
    assert set(spec) >= {"acceptance_rate", "mean_accepted_tokens", "steps"}
    assert report["identical"] is True and ar["token_ids"] == spec["token_ids"]
    assert report["divergence"] is None  # float32: token-identical, nothing to explain
    assert sum(len(step["token_ids"]) for step in spec["steps"]) == len(spec["token_ids"])


def test_sampling_and_fixed_threshold_options(model_dir, capsys, monkeypatch, tmp_path):
    # A busy machine (as CI often is): no timing is trusted enough for the disk cache, so the second load
    # must reuse the first's kernel choices; measured anew, they may round differently and change the sample.
    import selfspec.engine.kernels as kernels

    monkeypatch.setenv("SELFSPEC_CACHE", str(tmp_path))
    monkeypatch.setattr(kernels.os, "getloadavg", lambda: (64.0, 64.0, 64.0))
    args = ["generate", "--model", str(model_dir), "--prompt", "Hi", "--max-new-tokens", "12", "--json",
            "--temperature", "0.8", "--top-p", "0.9", "--top-k", "20", "--seed", "7", "--max-draft", "3",
            "--no-adaptive", "--threshold", "0.4", "--attn", "0", "--raw",
            "--draft-weights", "full"]  # a seed reproduces a sample for one draft; auto could re-measure another
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(args) == 0
    second = json.loads(capsys.readouterr().out)
    assert first["self_speculative"]["token_ids"] == second["self_speculative"]["token_ids"]  # seeded
    choices = [report["engine"]["products"]["choices"] for report in (first, second)]
    assert choices[0] and not any(choice["trusted"] for choice in choices[0])
    assert [c["name"] for c in choices[1]] == [c["name"] for c in choices[0]]
    assert all(choice["cached"] for choice in choices[1])
    steps = first["self_speculative"]["steps"]
    assert all(step["drafted"] <= 3 for step in steps)
    # A fixed threshold stays where it was set (the adaptive rule would move it after every step).
    assert {step["gamma"] for step in steps if step["kind"] == "speculate"} == {0.4}


@pytest.mark.parametrize("args,message", [
    (["--prompt", ""], "prompt is empty"),
    (["--prompt", "hi", "--max-new-tokens", "0"], "max_new_tokens"),
    (["--prompt", "hi", "--attn", "9"], "out of range"),
    (["--prompt", "hi", "--attn", "1,x"], "comma-separated"),
    (["--prompt", "hi", "--temperature", "-1"], "temperature"),
])
def test_bad_arguments_give_one_line_errors(model_dir, capsys, args, message):
    assert main(["generate", "--model", str(model_dir), *args]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error:") and message in err and "Traceback" not in err


def test_bad_profile_file(model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["generate", "--model", str(model_dir), "--prompt", "hi", "--profile", str(bad)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"model": "x", "num_layers": 30, "attn": [1], "mlp": []}))
    assert main(["generate", "--model", str(model_dir), "--prompt", "hi", "--profile", str(other)]) == 2
    assert "30 layers" in capsys.readouterr().err


def test_unknown_model_path(capsys):
    assert main(["generate", "--model", "/no/such/model", "--prompt", "hi"]) == 2
    assert "no model directory" in capsys.readouterr().err
    assert main(["generate", "--model", "./missing.gguf", "--prompt", "hi"]) == 2
    assert "no GGUF file" in capsys.readouterr().err


@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:9"}],
                         ids=["offline", "unreachable"])
def test_hub_model_that_cannot_be_reached(env, tmp_path):
    result = run_cli("generate", "--model", "someone/not-cached-model", "--prompt", "hi",
                     env={**env, "HF_HOME": str(tmp_path)})
    assert result.returncode == 2
    assert "cannot load model 'someone/not-cached-model'" in result.stderr
    assert "Traceback" not in result.stderr


def test_json_reports_the_draft_weights_memory_and_plain_steps(model_dir, capsys):
    args = ["generate", "--model", str(model_dir), "--prompt", "Tell me a story.", "--max-new-tokens", "16",
            "--json", "--draft-weights", "int8", "--attn", "1"]
    assert main(args) == 0
    spec = json.loads(capsys.readouterr().out)["self_speculative"]
    assert spec["draft_weights"] == "int8"
    config = LlamaConfig.from_pretrained(model_dir)
    h, i, v = config.hidden_size, config.intermediate_size, config.vocab_size
    heads = config.num_attention_heads
    kv = config.num_key_value_heads * (h // heads)
    shapes = [(h, h), (kv, h), (kv, h), (h, h), (i, h), (i, h), (h, i)] * config.num_hidden_layers
    # int8 weights plus one scale per row, 2 bytes (bf16) or 4 (fp32) depending on the kernel chosen; the head
    # likewise, or screened: a quarter of a byte a weight plus a float16 scale and low per group of 32
    if spec["kernels"][f"int8 {v}x{h} head"].startswith("int2-screened"):
        head_low = head_high = v * h // 4 + v * h // 32 * 4
    else:
        shapes.append((v, h))
        head_low = head_high = 0
    low = sum(o * n + 2 * o for o, n in shapes) + head_low
    high = sum(o * n + 4 * o for o, n in shapes) + head_high
    assert low <= spec["draft_extra_bytes"] <= high
    assert spec["kernels"] and spec["plain_steps"] == sum(s["kind"] == "decode" for s in spec["steps"])
    # the C++ layer loop makes torch's packed products and the 8-bit dot products; with the latter alone a draft
    # token runs in buffers (engine/native_layers.py)
    products = [name for shape, name in spec["kernels"].items() if not shape.startswith(("attention", f"int8 {v}x"))]
    in_loop = all(p.startswith(("int8pack", "int4pack")) or "-int8dot" in p for p in products)
    in_buffers = all("-int8dot" in p for p in products) and (h // heads) % 8 == 0
    assert spec["layer_loop"] == ("python" if not in_loop else "c++ in buffers" if in_buffers else "c++")
    with pytest.raises(SystemExit):
        main([*args[:-4], "--draft-weights", "int2"])
    assert "invalid choice: 'int2'" in capsys.readouterr().err
