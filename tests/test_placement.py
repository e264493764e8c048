"""Device and dtype by capability (CUDA mocked within each test), the CPU's measured choice, compiling."""

import json

import pytest
import torch

from selfspec.engine.kernels import machine_fingerprint
from selfspec.models.loading import load_model
from selfspec.engine.compiled import compile_setting
from selfspec.engine.host import compile_allowed
from selfspec.models.placement import choose_placement, measured_cpu_dtype
from tiny_models import save_tiny, tiny_model


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    for name in ("SELFSPEC_DEVICE", "SELFSPEC_DTYPE", "SPACES_ZERO_GPU", "SELFSPEC_COMPILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SELFSPEC_CACHE", str(tmp_path / "cache"))


def fake_cuda(monkeypatch, capability, bf16_claimed=True):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    # What the capability check exists for: this call also says yes where bf16 is only emulated.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_claimed)


@pytest.mark.parametrize("capability, dtype", [
    ((7, 5), torch.float16),  # T4: bf16 only emulated
    ((7, 0), torch.float16),  # V100
    ((8, 0), torch.bfloat16),  # A100
    ((8, 9), torch.bfloat16),  # L4 / L40S
    ((9, 0), torch.bfloat16),  # H100 / H200
    ((12, 0), torch.bfloat16),  # RTX Pro 6000 (Blackwell)
])
def test_cuda_dtype_follows_the_capability(monkeypatch, capability, dtype):
    fake_cuda(monkeypatch, capability)
    placement = choose_placement()
    assert placement.device == "cuda" and placement.dtype == dtype and not placement.measure_cpu_16bit
    assert f"{capability[0]}.{capability[1]}" in placement.reason


def test_the_cpu_defaults_to_float32_and_asks_for_a_measurement(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    placement = choose_placement()
    assert (placement.device, placement.dtype, placement.measure_cpu_16bit) == ("cpu", torch.float32, True)


def test_asked_or_environment_dtype_and_device_win(monkeypatch):
    fake_cuda(monkeypatch, (7, 5))
    assert choose_placement(dtype="bfloat16").dtype == torch.bfloat16
    assert choose_placement(device="cpu").dtype == torch.float32
    monkeypatch.setenv("SELFSPEC_DTYPE", "float32")
    monkeypatch.setenv("SELFSPEC_DEVICE", "cuda:1")
    placement = choose_placement()
    assert (placement.device, placement.dtype, placement.measure_cpu_16bit) == ("cuda:1", torch.float32, False)
    assert choose_placement(dtype="float16").dtype == torch.float16  # an argument beats the environment
    with pytest.raises(ValueError, match="unknown dtype 'float8'"):
        choose_placement(dtype="float8")


def test_zero_gpu_before_a_gpu_is_attached_uses_bfloat16(monkeypatch):
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def not_yet(device=None):
        raise RuntimeError("No CUDA GPUs are available")

    monkeypatch.setattr(torch.cuda, "get_device_capability", not_yet)
    placement = choose_placement()
    assert placement.device == "cuda" and placement.dtype == torch.bfloat16


def cached_choice(tmp_path, key, milliseconds):
    """Write what an earlier measurement on this machine found, in the kernel cache's own format."""
    path = tmp_path / "cache" / "kernels.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    full_key = f"{machine_fingerprint(torch.device('cpu'))} | cpu-dtype-steps:{key}"
    name = min(milliseconds, key=milliseconds.get)
    offered = ["float32", "bfloat16", "float16"]  # every dtype is offered; one the CPU cannot run has no time
    path.write_text(json.dumps({full_key: {"name": name, "milliseconds": milliseconds, "candidates": offered}}))


@pytest.mark.parametrize("milliseconds, dtype", [
    ({"float32": 10.0, "bfloat16": 5.0, "float16": 30.0}, torch.bfloat16),
    ({"float32": 10.0, "bfloat16": 9.5, "float16": 12.0}, torch.float32),  # faster, but within the margin: stay exact
    ({"float32": 10.0, "bfloat16": 14.0, "float16": 6.0}, torch.float16),
    ({"float32": 10.0, "bfloat16": 14.0}, torch.float32),  # float16 did not run on this CPU
])
def test_the_cpu_uses_16_bits_only_when_they_measured_clearly_faster(tmp_path, milliseconds, dtype):
    cached_choice(tmp_path, "tiny", milliseconds)
    chosen, reason = measured_cpu_dtype(tiny_model("llama"), "tiny")
    fastest_16bit = min(ms for name, ms in milliseconds.items() if name != "float32")
    assert chosen == dtype and f"{fastest_16bit:.1f} ms" in reason


def test_each_dtype_is_timed_over_a_step_and_a_verification(monkeypatch):
    """A dtype can be quick over one row and slow over several (float16 without native arithmetic): each
    candidate must run both a one-token forward and a five-position one, in its own dtype."""
    import selfspec.models.placement as placement
    from selfspec.engine.kernels import KernelChoice

    seen: dict[str, list[int]] = {}

    def run_each_once(key, candidates, device, **options):
        for name, run in candidates.items():
            seen[name] = [out.logits.shape[1] for out in run()]
            assert {str(out.logits.dtype) for out in run()} == {f"torch.{name}"}
        return KernelChoice(key, "float32", {name: 1.0 for name in candidates})

    monkeypatch.setattr(placement, "choose_fastest", run_each_once)
    measured_cpu_dtype(tiny_model("llama"), "widths")
    assert seen == {name: [1, 5] for name in ("float32", "bfloat16", "float16")}


def test_a_fresh_cpu_measurement_is_recorded_and_followed(tmp_path, monkeypatch, quiet_machine):
    import selfspec.engine.kernels as kernels

    # Whether a tiny model's timings scatter depends on what else runs; here they count as steady,
    # so the measurement is recorded (tests/test_kernels.py covers the ones that are not).
    monkeypatch.setattr(kernels, "steady", lambda samples: True)
    chosen, _ = measured_cpu_dtype(tiny_model("llama"), "fresh")
    recorded = next(iter(json.loads((tmp_path / "cache" / "kernels.json").read_text()).values()))["milliseconds"]
    fastest_16bit = min(("bfloat16", "float16"), key=lambda name: recorded.get(name, float("inf")))
    expected = fastest_16bit if recorded[fastest_16bit] < 0.9 * recorded["float32"] else "float32"
    assert str(chosen) == f"torch.{expected}"


def test_load_model_applies_the_placement(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = save_tiny(tmp_path / "tiny")
    cached_choice(tmp_path, str(path), {"float32": 10.0, "bfloat16": 5.0})
    lm = load_model(str(path))
    assert lm.model.dtype == torch.bfloat16 and "bfloat16 on the CPU" in lm.placement
    assert load_model(str(path), dtype="float32").model.dtype == torch.float32


def test_compiling_is_refused_on_zero_gpu_and_by_the_switch(monkeypatch):
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    notice = compile_allowed("cuda")
    assert "ZeroGPU" in notice and "\n" not in notice
    monkeypatch.delenv("SPACES_ZERO_GPU")
    monkeypatch.setenv("SELFSPEC_COMPILE", "0")
    assert not compile_setting(None, torch.device("cuda"))


def test_compiling_needs_a_compiler(monkeypatch):
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("CXX", raising=False)
    assert "compiler" in compile_allowed("cpu")
    monkeypatch.setenv("CXX", "/opt/some/c++")
    assert (compile_allowed("cpu") is None) == torch._dynamo.is_dynamo_supported()
