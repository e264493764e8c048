"""The engine's C++ extension (csrc/): built on first use with torch's own builder, cached on disk.

It holds the walk's layer loops and the draft's buffers path (native_layers.py), the 8-bit dot products
(lowbit.py) and the bfloat16 pair dot products (narrow_linear.bf16_pairs_linear). It is compiled with a C++
compiler and ninja once per machine, torch version and source text, into the selfspec cache (tens of seconds, one
line on stderr). Where it cannot be built, or with SELFSPEC_NATIVE=0, the engine runs its Python paths instead,
after one line that says so.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import sys
from pathlib import Path

import torch

from selfspec.engine.host import cache_root

SOURCE_DIR = Path(__file__).with_name("csrc")
EXTENSION = "selfspec_native"


def native_enabled() -> bool:
    return os.environ.get("SELFSPEC_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def source_files(source_dir: Path | None = None) -> list[Path]:
    """Every source and header of the extension, in a fixed order."""
    folder = source_dir or SOURCE_DIR
    return sorted([*folder.glob("*.cpp"), *folder.glob("*.h")])


def source_digest(source_dir: Path | None = None) -> str:
    """Twelve hex digits that change with any source or header of the extension."""
    if source_dir is None:
        return _own_source_digest()
    digest = hashlib.sha256()
    for path in source_files(source_dir):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


@functools.cache  # the checkout's sources do not change while the process runs
def _own_source_digest() -> str:
    return source_digest(SOURCE_DIR)


def extension_dir(source_dir: Path | None = None) -> Path:
    """One folder per torch version and source text: a checkout never loads a build of another's source."""
    return cache_root() / "extensions" / f"torch-{torch.__version__}-{source_digest(source_dir)}"


def native_extension():
    """The built extension module, or None where it is switched off or cannot be built (said once, on stderr)."""
    return _built_extension() if native_enabled() else None


@functools.cache
def _built_extension():
    from torch.utils import cpp_extension

    build_dir = extension_dir()
    _find_ninja()
    try:
        build_dir.mkdir(parents=True, exist_ok=True)
        if not any(build_dir.glob(f"{EXTENSION}*.so")):
            print(f"selfspec: building the C++ extension on first use (cached in {build_dir})", file=sys.stderr)
        sources = [str(path) for path in source_files() if path.suffix == ".cpp"]
        return cpp_extension.load(EXTENSION, sources, extra_cflags=["-O2", "-fopenmp"], build_directory=str(build_dir))
    except Exception as error:  # noqa: BLE001 -- no compiler, no ninja, a failed build: the Python paths run
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        reason = reason if len(reason) <= 160 else reason[:157] + "..."
        print(f"selfspec: the engine runs its Python paths; its C++ extension could not be built ({reason})",
              file=sys.stderr)
        return None


def _find_ninja() -> None:
    """torch's builder runs `ninja` from PATH; a virtual environment's own (PyPI's ninja, requirements.txt)
    is there only once the environment is activated, so its folder is added as activation would."""
    own = Path(sys.executable).with_name("ninja")
    if shutil.which("ninja") is None and own.is_file():
        os.environ["PATH"] = os.pathsep.join([str(own.parent), os.environ.get("PATH", "")])
