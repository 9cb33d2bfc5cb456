"""Archive limits: compression ratio and total size (listing and while writing), the zip end
record's entry count, manifest name/version rules and handler files that must be present."""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import pytest

from torchwick.archiver import ArchiveLimits, UnsafeArchiveError, extract_archive
from torchwick.archiver.errors import ArchiveError
from torchwick.archiver.manifest import Manifest
from torchwick.archiver.reader import handler_file
from torchwick.archiver.safety import RATIO_FREE_BYTES, ByteBudget, Entry

from .builders import make_tar, make_zip, manifest_bytes

GOOD = {"MAR-INF/MANIFEST.json": manifest_bytes(), "handler.py": b"x = 1\n", "model.pt": b"w"}
BOMB_BYTES = RATIO_FREE_BYTES + (16 << 20)


def _nothing_left(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    assert not dest.exists() or not any(dest.iterdir())


@pytest.mark.parametrize("kind", ["zip", "tgz"])
def test_a_small_bomb_is_refused_by_its_ratio(tmp_path: Path, kind: str) -> None:
    members = {**GOOD, "weights.bin": bytes(BOMB_BYTES)}
    if kind == "zip":
        source = make_zip(tmp_path / "bomb.mar", members)
    else:
        source = make_tar(tmp_path / "bomb.tar.gz", list(members.items()))
    assert source.stat().st_size < 1 << 20  # 80 MiB of zeros in well under 1 MiB
    with pytest.raises(UnsafeArchiveError, match="max_archive_compression_ratio") as caught:
        extract_archive(source, tmp_path / "dest" / "model")
    assert caught.value.entry == "weights.bin"
    _nothing_left(tmp_path)


def test_the_ratio_is_a_setting(tmp_path: Path) -> None:
    source = make_zip(tmp_path / "bomb.mar", {**GOOD, "weights.bin": bytes(BOMB_BYTES)})
    lenient = ArchiveLimits(max_compression_ratio=1e6)
    assert extract_archive(source, tmp_path / "ok", lenient).root == tmp_path / "ok"
    assert (tmp_path / "ok" / "weights.bin").stat().st_size == BOMB_BYTES


def test_small_archives_always_get_the_free_allowance(tmp_path: Path) -> None:
    # A test model with a zero tensor compresses a thousandfold and must still load.
    source = make_zip(tmp_path / "zeros.mar", {**GOOD, "model.pt": bytes(8 << 20)})
    assert extract_archive(source, tmp_path / "ok").root.is_dir()


def test_the_uncompressed_total_is_a_setting(tmp_path: Path) -> None:
    source = make_zip(tmp_path / "m.mar", {**GOOD, "weights.bin": bytes(2 << 20)})
    limits = ArchiveLimits(max_total_bytes=1 << 20)
    with pytest.raises(UnsafeArchiveError, match=r"max_archive_uncompressed_size"):
        extract_archive(source, tmp_path / "dest" / "model", limits)
    _nothing_left(tmp_path)


def test_byte_budget_stops_before_writing_past_the_limit(tmp_path: Path) -> None:
    # Declared sizes can lie; the budget counts what really comes out and never writes the
    # chunk that would pass the limit.
    limits = ArchiveLimits(max_total_bytes=3 << 20)
    budget = ByteBudget(limits)
    entry = Entry("big.bin", 10 << 20, False, "big.bin")
    target = tmp_path / "big.bin"
    with target.open("wb") as out, pytest.raises(UnsafeArchiveError, match="uncompressed total"):
        budget.copy(io.BytesIO(bytes(10 << 20)), out, entry)
    assert target.stat().st_size <= 3 << 20
    assert budget.written <= 3 << 20


def test_byte_budget_ratio_uses_the_archive_size(tmp_path: Path) -> None:
    budget = ByteBudget(ArchiveLimits(max_compression_ratio=2.0), archive_size=1 << 30)
    entry = Entry("a.bin", 4 << 20, False, "a.bin")
    with (tmp_path / "a.bin").open("wb") as out:
        budget.copy(io.BytesIO(bytes(4 << 20)), out, entry)
    tight = ByteBudget(ArchiveLimits(max_compression_ratio=1.0), archive_size=1)
    big = Entry("b.bin", RATIO_FREE_BYTES + 1, False, "b.bin")
    with (tmp_path / "b.bin").open("wb") as out, pytest.raises(UnsafeArchiveError, match="ratio"):
        tight.copy(io.BytesIO(bytes(RATIO_FREE_BYTES + 1)), out, big)
    assert (tmp_path / "b.bin").stat().st_size <= RATIO_FREE_BYTES


def _as_zip64(path: Path, declared_entries: int | None = None) -> Path:
    """Rewrite a small zip's end record in zip64 form (optionally lying about the count)."""
    data = path.read_bytes()
    at = data.rfind(b"PK\x05\x06")
    fields = struct.unpack_from("<4s4H2LH", data, at)
    count, size, offset = fields[4], fields[5], fields[6]
    declared = count if declared_entries is None else declared_entries
    record = struct.pack(
        "<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, declared, declared, size, offset
    )
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, at, 1)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    path.write_bytes(data[:at] + record + locator + end)
    return path


def test_zip64_end_records_are_read(tmp_path: Path) -> None:
    honest = _as_zip64(make_zip(tmp_path / "honest.mar", GOOD))
    assert len(zipfile.ZipFile(honest).infolist()) == 3  # still a valid zip
    assert extract_archive(honest, tmp_path / "ok").root.is_dir()
    lying = _as_zip64(make_zip(tmp_path / "lying.mar", GOOD), declared_entries=5_000_000)
    with pytest.raises(ArchiveError, match="lists 5000000 entries"):
        extract_archive(lying, tmp_path / "dest" / "model")


def test_an_oversized_zip_directory_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "fat.mar"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in GOOD.items():
            archive.writestr(name, data)
        for index in range(20):
            info = zipfile.ZipInfo(f"pad{index}.txt")
            info.comment = b"c" * 65_000
            archive.writestr(info, b"")
    with pytest.raises(ArchiveError, match="the zip directory is"):
        extract_archive(path, tmp_path / "dest" / "model", ArchiveLimits(max_entries=30))


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("modelVersion", "1.0/../../x", "may not contain '/'"),
        ("modelVersion", "1.0\\x", "may not contain '/'"),
        ("modelVersion", "1.0\nINFO forged line", "control characters"),
        ("modelVersion", "..", "is not a version"),
        ("modelName", "echo\n", "does not match"),
        ("modelName", "echo\nINFO forged", "does not match"),
        ("modelName", "../echo", "does not match"),
    ],
)
def test_manifest_names_and_versions_are_checked(field: str, value: str, problem: str) -> None:
    with pytest.raises(ArchiveError, match=rf"field 'model\.{field}'.*{problem}") as caught:
        Manifest.from_json_bytes(manifest_bytes(**{field: value}))
    assert "\n" not in caught.value.message


def test_ordinary_versions_still_pass() -> None:
    for version in ("1.0", "2", "1.0-rc1", "1.0 beta", "v1_2"):
        assert Manifest.from_json_bytes(manifest_bytes(modelVersion=version)).model.model_version


@pytest.mark.parametrize(
    ("handler", "file"),
    [
        ("handler.py", "handler.py"),
        ("handler.py:handle", "handler.py"),
        ("code/handler.py:my_fn", "code/handler.py"),
        ("code/handler", "code/handler.py"),
        ("image_classifier", None),
        ("my_module:handle", None),
        ("ts.torch_handler.image_classifier", None),
        ("package.module:fn", None),
    ],
)
def test_handler_file_names(handler: str, file: str | None) -> None:
    assert handler_file(handler) == file


@pytest.mark.parametrize("kind", ["zip", "tgz", "folder"])
def test_a_missing_handler_file_is_refused(tmp_path: Path, kind: str) -> None:
    members = {**GOOD, "MAR-INF/MANIFEST.json": manifest_bytes(handler="missing.py:handle")}
    if kind == "zip":
        source = make_zip(tmp_path / "m.mar", members)
    elif kind == "tgz":
        source = make_tar(tmp_path / "m.tar.gz", [(f"m/{k}", v) for k, v in members.items()])
    else:
        source = tmp_path / "folder"
        for name, data in members.items():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes(data)
    with pytest.raises(ArchiveError, match=r"manifest handler 'missing\.py:handle' names the file"):
        extract_archive(source, tmp_path / "dest" / "model")
    _nothing_left(tmp_path)


@pytest.mark.parametrize("handler", ["image_classifier", "my_module:handle", "handler.py:handle"])
def test_handlers_that_need_no_file_or_have_it_pass(tmp_path: Path, handler: str) -> None:
    members = {**GOOD, "MAR-INF/MANIFEST.json": manifest_bytes(handler=handler)}
    source = make_tar(tmp_path / "m.tar.gz", [(f"m/{k}", v) for k, v in members.items()])
    assert extract_archive(source, tmp_path / "ok").root == tmp_path / "ok"
