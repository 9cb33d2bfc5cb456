"""Every containment rule: the archive is refused with one line naming entry and rule, and
nothing at all is written next to the destination."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from torchwick.archiver import ArchiveLimits, UnsafeArchiveError, extract_archive, read_manifest
from torchwick.archiver.errors import ArchiveError

from .builders import (
    make_tar,
    make_zip,
    manifest_bytes,
    patch_central_record,
    tar_link,
    tar_special,
)

GOOD = {"MAR-INF/MANIFEST.json": manifest_bytes(), "handler.py": b"x = 1\n", "model.pt": b"w"}


def _refused(
    source: Path, tmp_path: Path, entry: str, rule: str, limits: ArchiveLimits | None = None
) -> None:
    destination = tmp_path / "dest" / "model"
    with pytest.raises(UnsafeArchiveError) as caught:
        extract_archive(source, destination, limits)
    assert caught.value.entry == entry
    assert rule in caught.value.rule
    message = str(caught.value)
    assert entry in message and rule in message and "\n" not in message
    # Nothing was created: not the destination, not a staging folder beside it.
    assert not destination.exists()
    assert not (tmp_path / "dest").exists() or not any((tmp_path / "dest").iterdir())


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("../evil.py", "parent directory reference"),
        ("sub/../../evil.py", "parent directory reference"),
        ("/etc/evil", "absolute path"),
        ("C:/evil", "drive letter"),
        ("..\\evil", "backslash"),
    ],
)
@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_escaping_names(tmp_path: Path, name: str, rule: str, kind: str) -> None:
    members = {**GOOD, name: b"boom"}
    if kind == "zip":
        source = make_zip(tmp_path / "bad.mar", members)
    else:
        source = make_tar(tmp_path / "bad.tar.gz", list(members.items()))
    _refused(source, tmp_path, name, rule)


def test_zip_symlink(tmp_path: Path) -> None:
    source = make_zip(tmp_path / "bad.mar", GOOD, symlinks={"link.py": "/etc/passwd"})
    _refused(source, tmp_path, "link.py", "symbolic link")


def test_zip_special_file(tmp_path: Path) -> None:
    source = make_zip(
        tmp_path / "bad.mar", {**GOOD, "fifo": b""}, modes={"fifo": stat.S_IFIFO | 0o644}
    )
    _refused(source, tmp_path, "fifo", "special file")


def test_zip_regular_mode_bits_are_fine(tmp_path: Path) -> None:
    source = make_zip(tmp_path / "ok.mar", GOOD, modes={"handler.py": stat.S_IFREG | 0o755})
    assert extract_archive(source, tmp_path / "x").manifest.model.model_name == "crafted"


@pytest.mark.parametrize(
    ("member", "rule"),
    [
        (tar_link("link.py", "/etc/passwd"), "symbolic link"),
        (tar_link("hard.py", "handler.py", hard=True), "hard link"),
        (tar_special("dev", tarfile.CHRTYPE), "device file"),
        (tar_special("blk", tarfile.BLKTYPE), "device file"),
        (tar_special("pipe", tarfile.FIFOTYPE), "FIFO"),
    ],
)
def test_tar_links_and_devices(tmp_path: Path, member: tarfile.TarInfo, rule: str) -> None:
    source = make_tar(tmp_path / "bad.tar.gz", [*GOOD.items(), member])
    _refused(source, tmp_path, member.name, rule)


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_too_many_entries(tmp_path: Path, kind: str) -> None:
    members = {**GOOD, **{f"f{i}.txt": b"" for i in range(10)}}
    limits = ArchiveLimits(max_entries=10)
    if kind == "zip":
        # A zip is counted from its end record, before zipfile reads the whole directory.
        source = make_zip(tmp_path / "many.mar", members)
        with pytest.raises(ArchiveError, match="lists 13 entries, more than max_archive_entries"):
            extract_archive(source, tmp_path / "dest" / "model", limits)
        assert not (tmp_path / "dest").exists()
    else:
        source = make_tar(tmp_path / "many.tar.gz", list(members.items()))
        _refused(source, tmp_path, "f7.txt", "more than 10 entries", limits)


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_declared_size_bomb(tmp_path: Path, kind: str) -> None:
    # 4 MiB of zeros compresses to a few KB; the limit is on the uncompressed total.
    members = {**GOOD, "bomb.bin": bytes(4 << 20)}
    if kind == "zip":
        source = make_zip(tmp_path / "bomb.mar", members)
    else:
        source = make_tar(tmp_path / "bomb.tar.gz", list(members.items()))
    assert source.stat().st_size < 64 << 10
    _refused(
        source,
        tmp_path,
        "bomb.bin",
        "uncompressed total exceeds",
        ArchiveLimits(max_total_bytes=1 << 20),
    )


def test_zip_entry_lying_about_its_size(tmp_path: Path) -> None:
    # Declared size 10, real content 4 MiB: zipfile stops at the declared size and then fails
    # its CRC check, so the bytes past the declaration are never written and nothing remains.
    source = make_zip(tmp_path / "liar.mar", {**GOOD, "bomb.bin": bytes(4 << 20)})
    patch_central_record(source, "bomb.bin", size=10)
    destination = tmp_path / "dest" / "model"
    with pytest.raises(ArchiveError, match="CRC"):
        extract_archive(source, destination)
    assert not destination.exists()
    assert list((tmp_path / "dest").iterdir()) == []


def test_tar_entry_with_less_data_than_declared(tmp_path: Path) -> None:
    info = tarfile.TarInfo("short.bin")
    info.size = 100
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.addfile(info, io.BytesIO(bytes(100)))
    truncated = buffer.getvalue()[: 512 + 40]  # header plus 40 of the 100 bytes
    source = tmp_path / "short.tar"
    source.write_bytes(truncated)
    destination = tmp_path / "dest" / "model"
    with pytest.raises(ArchiveError):
        extract_archive(source, destination)
    assert not destination.exists()


@pytest.mark.parametrize(
    ("members", "entry", "rule"),
    [
        ({"a.txt": b"1", "a.txt/b": b"2"}, "a.txt/b", "is a file, not a folder"),
        ({"d/x": b"1", "d": b"2"}, "d", "is both a file and a folder"),
    ],
)
def test_file_and_folder_clash(
    tmp_path: Path, members: dict[str, bytes], entry: str, rule: str
) -> None:
    source = make_zip(tmp_path / "clash.mar", {**GOOD, **members})
    _refused(source, tmp_path, entry, rule)


def test_duplicate_entry(tmp_path: Path) -> None:
    source = make_tar(tmp_path / "dup.tar.gz", [*GOOD.items(), ("handler.py", b"other")])
    _refused(source, tmp_path, "handler.py", "duplicate entry")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("serializedFile", "../../etc/passwd"),
        ("modelFile", "/abs/model.py"),
        ("handler", "../outside.py:handle"),
        ("requirementsFile", "..\\r.txt"),
        ("configFile", "/etc/model-config.yaml"),
    ],
)
def test_manifest_paths_must_stay_inside(tmp_path: Path, field: str, value: str) -> None:
    members = {**GOOD, "MAR-INF/MANIFEST.json": manifest_bytes(**{field: value})}
    source = make_zip(tmp_path / "paths.mar", members)
    with pytest.raises(ArchiveError, match=f"manifest {field} .* points outside the archive"):
        read_manifest(source)
    with pytest.raises(ArchiveError):
        extract_archive(source, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_folder_with_link_escaping_it(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    (folder / "MAR-INF").mkdir(parents=True)
    (folder / "MAR-INF" / "MANIFEST.json").write_bytes(manifest_bytes())
    (folder / "inside.txt").write_text("x")
    (folder / "handler.py").write_text("def handle(data, context):\n    return data\n")
    os.symlink(folder / "inside.txt", folder / "alias.txt")
    assert extract_archive(folder, tmp_path / "unused").root == folder
    os.symlink("/etc/hostname", folder / "escape.txt")
    with pytest.raises(UnsafeArchiveError, match=r"escape\.txt.*outside the model folder"):
        extract_archive(folder, tmp_path / "unused")
    assert not (tmp_path / "unused").exists()


def test_encrypted_zip_entry(tmp_path: Path) -> None:
    source = make_zip(tmp_path / "enc.mar", GOOD)
    patch_central_record(source, "model.pt", flag_bits=0x1)
    _refused(source, tmp_path, "model.pt", "encrypted entry")
