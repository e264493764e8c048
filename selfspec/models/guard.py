"""A model id typed by a visitor is checked on the Hub before anything is downloaded.

Only the repository's metadata and its config.json are read: the architecture must be one the
engine supports, the parameter count must be known from the Hub's safetensors metadata (or the
safetensors index), and the weights must fit the device's memory and SELFSPEC_MAX_PARAMS.
SELFSPEC_ALLOW_ANY_MODEL=1 lifts the guard for a private deployment. Remote code is never run
either way (loading.py passes trust_remote_code=False).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch

from selfspec.engine.architectures import SUPPORTED_MODEL_TYPES
from selfspec.models.hub_status import hub_endpoint
from selfspec.models.loading import ModelLoadError
from selfspec.engine.host import available_memory, zero_gpu
from selfspec.models.placement import Placement

DEFAULT_MAX_PARAMS = 8_500_000_000  # 8B-class models (Llama-3.1-8B has 8.03B)
HEADROOM = 1.15  # KV cache, activations and the allocator's slack on top of the weights
ZERO_GPU_MEMORY = 48 * 2**30  # a ZeroGPU "large" slice, the default; no GPU is attached at start-up
INDEX_FILE = "model.safetensors.index.json"


class ModelRefused(ModelLoadError):
    """A typed model id that the guard does not let this deployment download."""


@dataclass(frozen=True)
class HubModel:
    repo_id: str
    model_type: str
    parameters: int


def guard_lifted() -> bool:
    return os.environ.get("SELFSPEC_ALLOW_ANY_MODEL") == "1"


def max_parameters() -> int:
    value = os.environ.get("SELFSPEC_MAX_PARAMS")
    try:
        return int(float(value)) if value else DEFAULT_MAX_PARAMS
    except ValueError:
        raise ModelRefused(f"SELFSPEC_MAX_PARAMS must be a number of parameters, got {value!r}") from None


def check_typed_model(repo_id: str, placement: Placement, preset: bool = False) -> HubModel | None:
    """Raise ModelRefused unless `repo_id` names a supported Hub model that fits; None when the guard is lifted.

    preset: the deployment's owner listed the model, so SELFSPEC_MAX_PARAMS does not apply; the rest does.
    """
    if guard_lifted():
        return None
    facts = hub_model(repo_id)
    limit = None if preset else max_parameters()
    if limit is not None and facts.parameters > limit:
        raise ModelRefused(f"{repo_id} has {_billions(facts.parameters)} parameters, above this app's limit of "
                           f"{_billions(limit)} (SELFSPEC_MAX_PARAMS)")
    bytes_per = torch.empty((), dtype=placement.dtype).element_size() if isinstance(placement.dtype, torch.dtype) else 2
    needed, memory = int(facts.parameters * bytes_per * HEADROOM), device_memory(placement.device)
    if needed > memory:
        raise ModelRefused(f"{repo_id} needs about {needed / 2**30:.1f} GiB in {str(placement.dtype).removeprefix('torch.')} "
                           f"on {placement.device}, which has {memory / 2**30:.1f} GiB")
    return facts


def hub_model(repo_id: str) -> HubModel:
    """Architecture and parameter count of a Hub model, from its metadata and config.json only."""
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise ModelRefused(f"{repo_id!r} is not a Hub model id (owner/name)") from None
    try:
        info = HfApi(endpoint=hub_endpoint()).model_info(repo_id)
        config = json.loads(open(hf_hub_download(repo_id, "config.json", endpoint=hub_endpoint())).read())
    except Exception as exc:  # not found, gated, private, unreachable: all refused alike, with the reason
        raise ModelRefused(f"cannot check {repo_id} on the Hub: {_first_line(exc)}") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelRefused(f"{repo_id} is a {model_type!r} model; supported: {', '.join(SUPPORTED_MODEL_TYPES.values())}")
    parameters = info.safetensors.total if info.safetensors else _parameters_from_index(repo_id, info, config)
    if not parameters:
        raise ModelRefused(f"the size of {repo_id} is unknown (no safetensors metadata on the Hub), so it is not loaded")
    return HubModel(repo_id, model_type, int(parameters))


def _parameters_from_index(repo_id: str, info, config: dict) -> int | None:
    """Parameters from a sharded checkpoint's index: its total byte size over the stored dtype's size."""
    from huggingface_hub import hf_hub_download

    if INDEX_FILE not in {s.rfilename for s in info.siblings or []}:
        return None
    try:
        total = json.loads(open(hf_hub_download(repo_id, INDEX_FILE, endpoint=hub_endpoint())).read())["metadata"]["total_size"]
    except Exception:
        return None
    stored = config.get("dtype") or config.get("torch_dtype") or "float32"
    try:
        return int(total) // torch.empty((), dtype=getattr(torch, stored)).element_size()
    except (AttributeError, TypeError):
        return None


def device_memory(device: str) -> int:
    if torch.device(device).type != "cuda":
        return available_memory()
    if zero_gpu():  # no GPU is attached outside @spaces.GPU calls
        return ZERO_GPU_MEMORY
    return torch.cuda.get_device_properties(torch.device(device)).total_memory


def _billions(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
