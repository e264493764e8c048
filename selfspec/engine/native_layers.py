"""The fused low-bit draft's layer loop in C++ (csrc/fused_layers.cpp), built on first use, cached on disk.

A draft token is some 1200 tensor operations, most on a few hundred numbers, and at batch 1 on a CPU
each one called from Python costs its Python call on top of the operation (docs/BENCHMARKS.md). The C++
loop makes the same ATen calls in the same order as fused_sublayers.py, so the draft's logits are equal
bit for bit (tests/test_native_layers.py); only the Python around them is gone. It is compiled with
torch's own extension builder (a C++ compiler and ninja) once per machine, torch and source, into the
selfspec cache. Where it cannot be built, or with SELFSPEC_NATIVE=0, the Python loop runs, after one line
that says so.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
from pathlib import Path

import torch

from selfspec.engine.cache import is_static
from selfspec.engine.host import cache_root

SOURCE = Path(__file__).with_name("csrc") / "fused_layers.cpp"
EXTENSION = "selfspec_fused_layers"


def native_enabled() -> bool:
    return os.environ.get("SELFSPEC_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def extension_dir() -> Path:
    return cache_root() / "extensions" / f"torch-{torch.__version__}"


@functools.cache
def fused_layers_extension():
    """The built extension module, or None where it cannot be built (said once, on stderr)."""
    from torch.utils import cpp_extension

    build_dir = extension_dir()
    _find_ninja()
    try:
        build_dir.mkdir(parents=True, exist_ok=True)
        if not any(build_dir.glob(f"{EXTENSION}*.so")):
            print(f"selfspec: building the draft's C++ layer loop on first use (cached in {build_dir})",
                  file=sys.stderr)
        return cpp_extension.load(EXTENSION, [str(SOURCE)], extra_cflags=["-O2"], build_directory=str(build_dir))
    except Exception as error:  # noqa: BLE001 -- no compiler, no ninja, a failed build: the Python loop runs
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        reason = reason if len(reason) <= 160 else reason[:157] + "..."
        print(f"selfspec: the draft runs its Python layer loop; its C++ layer loop could not be built ({reason})",
              file=sys.stderr)
        return None


def _find_ninja() -> None:
    """torch's builder runs `ninja` from PATH; a virtual environment's own (PyPI's ninja, requirements.txt)
    is there only once the environment is activated, so its folder is added as activation would."""
    own = Path(sys.executable).with_name("ninja")
    if shutil.which("ninja") is None and own.is_file():
        os.environ["PATH"] = os.pathsep.join([str(own.parent), os.environ.get("PATH", "")])


class NativeLayers:
    """A fused walk's layers (fused_sublayers.FusedLayer) as the C++ loop takes them: every tensor gathered
    once, in one flat list per kind."""

    def __init__(self, layers, extension):
        self._extension = extension
        fused = [layer.fused for layer in layers]
        products = [p.native_product for f in fused for p in (f.qkv, f.o, f.gate_up, f.down)]
        self._norms = [t for f in fused for t in (*f.input_norm, *f.mlp_norm)]
        self._kinds = [kind for kind, _, _, _ in products]
        self._weights = [weight for _, weight, _, _ in products]
        self._scales = [scale for _, _, scale, _ in products]
        self._groups = [group for _, _, _, group in products]
        self._biases = [p.bias for f in fused for p in (f.qkv, f.o, f.gate_up, f.down)]
        first = fused[0]
        self._shape = (first.query_heads, first.groups, first.head_dim, first.scaling, first.packs_one_query)

    def ready(self, cache) -> bool:
        """Whether this cache's buffers are there to write (a prefill made them)."""
        return is_static(cache) and all(layer.is_initialized for layer in cache.layers)

    def __call__(self, hidden: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor], mask, attended: int,
                 cache, plan: list[int]) -> torch.Tensor:
        """hidden's rows (q, d) through the layers, `plan[i]` saying which of layer i's sublayers run (bit 0
        attention, bit 1 MLP), their keys written to `cache` before the first `attended` keys are read."""
        layers = cache.layers
        return self._extension.run_layers(
            hidden, *rotary, mask, attended - hidden.shape[0], plan, self._norms, self._kinds, self._groups,
            self._weights, self._scales, self._biases, [layer.keys for layer in layers],
            [layer.values for layer in layers], [layer.cumulative_length for layer in layers], *self._shape)


def native_layers(layers) -> NativeLayers | None:
    """The C++ loop for these fused layers, or None where it cannot run them: switched off, no build, a
    device other than the CPU, or a product it does not make (lowbit.LowBitLinear.native_product)."""
    fused = [getattr(layer, "fused", None) for layer in layers]
    if not fused or not native_enabled() or any(f is None for f in fused):
        return None
    products = [p for f in fused for p in (f.qkv, f.o, f.gate_up, f.down)]
    if any(getattr(p, "native_product", None) is None for p in products):
        return None
    if any(t.device.type != "cpu" for p in products for t in p.native_product[1:3]):
        return None
    extension = fused_layers_extension()
    return None if extension is None else NativeLayers(layers, extension)
