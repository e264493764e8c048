"""scripts/gpu_bench.py on tiny shapes on CPU: the code a GPU run will execute, end to end."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


@pytest.fixture
def gpu_bench(monkeypatch, tmp_path):
    monkeypatch.setenv("SELFSPEC_CACHE", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(SCRIPTS))  # it imports its sibling gpu_projection.py
    spec = importlib.util.spec_from_file_location("gpu_bench", SCRIPTS / "gpu_bench.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_bench", module)
    spec.loader.exec_module(module)
    return module


def test_tiny_shapes_run_every_part_and_label_the_planted_run(gpu_bench, tmp_path, capsys):
    assert gpu_bench.main(["--shape", "tiny", "--models", "Llama-2-13B", "--planted-acceptance", "0.8",
                           "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu_bench.json").read_text())
    assert report["errors"] == [] and len(report["results"]) == 1
    result = report["results"][0]
    assert set(result["methods"]) == {"autoregressive", "generate"}
    assert all(m["identical"] for m in result["methods"].values())  # float32 on CPU: exact
    assert sorted(int(w) for w in result["costs"]["v_by_width"]) == list(range(2, 10))
    drafts = result["costs"]["c_by_draft"]
    assert set(drafts) == {"skip: even 45%", "int8", "int8 + skip", "int4", "int4 + skip"}
    assert all(c > 0 for c in drafts.values()) and result["errors"] == {}
    profile = result["profile"]  # on the CPU, operators stand in for the GPU's kernels
    assert profile["back_to_back_ms"] > 0 and profile["synced_ms"] > 0
    assert 0 < profile["matmul_kernel_ms"] <= profile["kernel_ms"] and profile["top_kernels"]
    assert abs(result["planted"]["agreement"] - 0.8) < 0.1
    for run in result["synthetic_speculation"].values():
        assert run["identical"] and run["speedup"] > 0
    text = capsys.readouterr().out
    assert "SYNTHETIC planted redundancy" in text and "x the floor" in text


def test_real_shapes_refuse_to_run_without_a_gpu(gpu_bench, monkeypatch, capsys):
    monkeypatch.setattr(gpu_bench.torch.cuda, "is_available", lambda: False)
    assert gpu_bench.main(["--models", "Llama-2-7B"]) == 2
    assert "need one" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gpu_bench.parse_args(["--models", "GPT-5"])
