"""Typed model ids are checked on the loopback Hub (the real huggingface_hub client) before any download."""

import json

import pytest
import torch

from selfspec.models.guard import ModelRefused, check_typed_model
from selfspec.models.placement import Placement

CPU_BF16 = Placement("cpu", torch.bfloat16, "test")


def safetensors_header(shapes: dict[str, list[int]], dtype: str = "BF16") -> bytes:
    """A safetensors file's header alone: the Hub (and the loopback one) count parameters from it."""
    header = {name: {"dtype": dtype, "shape": shape, "data_offsets": [0, 0]} for name, shape in shapes.items()}
    body = json.dumps(header).encode()
    return len(body).to_bytes(8, "little") + body


def publish(hub, repo_id, model_type="qwen2", parameters=500_000_000, weights=True):
    hub.put(repo_id, "config.json", json.dumps({"model_type": model_type, "dtype": "bfloat16"}).encode())
    if weights:  # two tensors, as a checkpoint has many
        half = parameters // 2
        hub.put(repo_id, "model.safetensors", safetensors_header({"a": [half], "b": [parameters - half]}))


def weight_downloads(hub) -> list[str]:
    return [path for method, path, _ in hub.requests if path.endswith((".safetensors", ".bin", ".gguf"))]


def test_a_supported_model_that_fits_passes_having_read_only_metadata(loopback_hub):
    publish(loopback_hub, "org/small-qwen", parameters=494_032_768)
    facts = check_typed_model("org/small-qwen", CPU_BF16)
    assert (facts.model_type, facts.parameters) == ("qwen2", 494_032_768)
    assert weight_downloads(loopback_hub) == []


@pytest.mark.parametrize("setup, repo_id, message", [
    (lambda hub: publish(hub, "org/gpt", model_type="gpt2"), "org/gpt", "is a 'gpt2' model; supported: Llama"),
    (lambda hub: publish(hub, "org/no-size", weights=False), "org/no-size", "size of org/no-size is unknown"),
    (lambda hub: None, "org/missing", "cannot check org/missing on the Hub"),
    (lambda hub: (publish(hub, "org/gated"), hub.gated.add("org/gated")), "org/gated", "cannot check org/gated"),
    (lambda hub: None, "not a model id", "'not a model id' is not a Hub model id"),
    (lambda hub: None, "../../etc/passwd", "is not a Hub model id"),
    (lambda hub: publish(hub, "org/huge", parameters=10**12), "org/huge", "above this app's limit"),
])
def test_refused_with_a_clear_message_and_nothing_downloaded(loopback_hub, setup, repo_id, message):
    setup(loopback_hub)
    with pytest.raises(ModelRefused, match=message):
        check_typed_model(repo_id, CPU_BF16)
    assert weight_downloads(loopback_hub) == []


def test_the_limit_and_the_device_memory_are_both_checked(loopback_hub, monkeypatch):
    publish(loopback_hub, "org/mid", parameters=2_000_000_000)
    monkeypatch.setenv("SELFSPEC_MAX_PARAMS", "1e9")
    with pytest.raises(ModelRefused, match=r"2.00B parameters, above this app's limit of 1.00B"):
        check_typed_model("org/mid", CPU_BF16)
    monkeypatch.setenv("SELFSPEC_MAX_PARAMS", "1e13")
    publish(loopback_hub, "org/vast", parameters=10**12)  # 2 TB in bf16: no machine here has that
    with pytest.raises(ModelRefused, match=r"needs about 2142.\d GiB in bfloat16 on cpu"):
        check_typed_model("org/vast", CPU_BF16)


def test_a_sharded_checkpoint_is_sized_from_its_index(loopback_hub):
    publish(loopback_hub, "org/sharded", weights=False)
    loopback_hub.put("org/sharded", "model.safetensors.index.json",
                     json.dumps({"metadata": {"total_size": 3_000_000_000}, "weight_map": {}}).encode())
    assert check_typed_model("org/sharded", CPU_BF16).parameters == 1_500_000_000  # bf16: 2 bytes each
    assert weight_downloads(loopback_hub) == []


def test_the_guard_can_be_lifted_for_a_private_deployment(loopback_hub, monkeypatch):
    monkeypatch.setenv("SELFSPEC_ALLOW_ANY_MODEL", "1")
    assert check_typed_model("org/anything", CPU_BF16) is None
    assert loopback_hub.requests == []


def test_on_zero_gpu_the_memory_is_the_slice_lent_per_call(loopback_hub, monkeypatch):
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")  # no GPU is attached at start-up: nothing to query
    monkeypatch.setenv("SELFSPEC_MAX_PARAMS", "1e11")
    cuda = Placement("cuda", torch.bfloat16, "test")
    publish(loopback_hub, "org/20b", parameters=20_000_000_000)  # 40 GB of bf16 weights
    assert check_typed_model("org/20b", cuda).parameters == 20_000_000_000
    publish(loopback_hub, "org/25b", parameters=25_000_000_000)
    with pytest.raises(ModelRefused, match=r"on cuda, which has 48.0 GiB"):
        check_typed_model("org/25b", cuda)
