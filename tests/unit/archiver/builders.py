"""Craft zip and tar archives member by member, including malicious ones."""

from __future__ import annotations

import io
import json
import stat
import tarfile
import zipfile
from pathlib import Path

MANIFEST = {
    "createdOn": "24/09/2024 09:41:17",
    "runtime": "python",
    "model": {
        "modelName": "crafted",
        "serializedFile": "model.pt",
        "handler": "handler.py",
        "modelVersion": "1.0",
    },
    "archiverVersion": "0.12.0",
}


def manifest_bytes(**model_overrides: object) -> bytes:
    """The crafted manifest, with fields of ``model`` replaced (``None`` removes one)."""
    manifest = json.loads(json.dumps(MANIFEST))
    for key, value in model_overrides.items():
        if value is None:
            manifest["model"].pop(key, None)
        else:
            manifest["model"][key] = value
    return json.dumps(manifest, indent=2).encode()


def make_zip(
    path: Path,
    members: dict[str, bytes],
    *,
    symlinks: dict[str, str] | None = None,
    modes: dict[str, int] | None = None,
) -> Path:
    """A zip with ``members``; ``symlinks`` adds Unix symlink entries, ``modes`` sets st_mode."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if modes and name in modes:
                info.create_system = 3
                info.external_attr = modes[name] << 16
            archive.writestr(info, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return path


def make_tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    """A .tar.gz from ``(name, data)`` pairs and ready-made ``TarInfo`` headers."""
    with tarfile.open(path, "w:gz") as archive:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                archive.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return path


def tar_link(name: str, target: str, *, hard: bool = False) -> tarfile.TarInfo:
    """A symlink (or hard link) header."""
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    return info


def tar_special(name: str, kind: bytes) -> tarfile.TarInfo:
    """A device or FIFO header (``tarfile.CHRTYPE``, ``BLKTYPE``, ``FIFOTYPE``)."""
    info = tarfile.TarInfo(name)
    info.type = kind
    return info


def patch_central_record(
    path: Path, name: str, *, flag_bits: int = 0, size: int | None = None
) -> None:
    """Rewrite a member's header fields in place: OR in ``flag_bits``, set the uncompressed size.

    Both the central directory record and the local header are patched, so zipfile sees a
    consistent (but lying) archive.
    """
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        local = archive.getinfo(name).header_offset
    at = data.find(b"PK\x01\x02")
    while at != -1:
        name_len = int.from_bytes(data[at + 28 : at + 30], "little")
        if data[at + 46 : at + 46 + name_len] == name.encode():
            data[at + 8] |= flag_bits
            data[local + 6] |= flag_bits
            if size is not None:
                data[at + 24 : at + 28] = size.to_bytes(4, "little")
                data[local + 22 : local + 26] = size.to_bytes(4, "little")
        at = data.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(data))
