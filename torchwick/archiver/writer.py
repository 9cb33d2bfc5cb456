"""Write a model archive deterministically and atomically in one of TorchServe's four formats.

Determinism: members are written in sorted order, every member gets the same timestamp (the
archive's epoch), mode 0644 (folders 0755), owner 0/0 with empty owner names, and the gzip
header carries that epoch and no file name. The same members and epoch therefore give the same
bytes. Atomicity: output goes to a hidden ``*.partial`` file or folder in the export folder and is
renamed into place only when complete; on failure it is removed, so no partial output remains.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Protocol

from .errors import ArchiveError

FORMAT_SUFFIXES = {"default": ".mar", "zip-store": ".mar", "tgz": ".tar.gz", "no-archive": ""}
ARCHIVE_FORMATS = tuple(FORMAT_SUFFIXES)
FILE_MODE = 0o644
DIR_MODE = 0o755
# zip cannot store times before 1980-01-01.
_ZIP_EPOCH_FLOOR = 315_532_800
_CHUNK = 1 << 20

Progress = Callable[[int], None]


class _Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...


class _Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...


@dataclass(frozen=True, slots=True)
class Member:
    """One file to store: its archive path and either a source file or literal bytes."""

    arcname: str
    source: Path | None = None
    data: bytes | None = None

    @property
    def size(self) -> int:
        """Bytes this member contributes."""
        if self.data is not None:
            return len(self.data)
        assert self.source is not None
        return self.source.stat().st_size

    @contextmanager
    def open(self) -> Iterator[IO[bytes]]:
        """A binary stream of the member's content."""
        if self.data is not None:
            yield io.BytesIO(self.data)
            return
        assert self.source is not None
        with open(self.source, "rb") as handle:
            yield handle


def output_path(export_dir: Path, model_name: str, archive_format: str) -> Path:
    """Where ``archive_format`` puts the archive of ``model_name``."""
    return export_dir / f"{model_name}{FORMAT_SUFFIXES[archive_format]}"


def write_archive(
    members: Sequence[Member],
    *,
    export_dir: Path,
    model_name: str,
    archive_format: str,
    epoch: int,
    force: bool,
    progress: Progress | None = None,
) -> tuple[Path, str]:
    """Write the archive and return ``(path, sha256 hex)``; raise ``ArchiveError``.

    For ``no-archive`` the digest is a tree digest: the sha256 of the ``sha256sum``-style lines
    ``"<file sha256>  <relative path>\\n"`` of every file in sorted order.
    """
    final = output_path(export_dir, model_name, archive_format)
    ordered = sorted(members, key=lambda member: member.arcname)
    tick = progress or (lambda _n: None)
    if archive_format == "no-archive":
        return final, _write_folder(
            ordered, final, model_name=model_name, epoch=epoch, force=force, tick=tick
        )
    handle, temp_name = tempfile.mkstemp(
        prefix=f".{final.name}.", suffix=".partial", dir=export_dir
    )
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as raw:
            if archive_format == "tgz":
                _write_tgz(raw, ordered, model_name, epoch, tick)
            else:
                method = (
                    zipfile.ZIP_STORED if archive_format == "zip-store" else zipfile.ZIP_DEFLATED
                )
                _write_zip(raw, ordered, method, epoch, tick)
        temp.chmod(FILE_MODE)
        digest = _file_sha256(temp)
        _publish_file(temp, final, force)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return final, digest


def _write_zip(
    raw: IO[bytes], members: Sequence[Member], method: int, epoch: int, tick: Progress
) -> None:
    stamp = datetime.fromtimestamp(max(epoch, _ZIP_EPOCH_FLOOR), tz=UTC).timetuple()[:6]
    with zipfile.ZipFile(raw, "w", compression=method) as archive:
        for member in members:
            info = zipfile.ZipInfo(member.arcname, date_time=stamp)
            info.compress_type = method
            info.create_system = 3  # Unix, so the mode bits below mean what they say
            info.external_attr = (0o100000 | FILE_MODE) << 16
            info.file_size = member.size
            # With file_size known up front, zipfile picks zip64 headers itself when needed.
            with member.open() as source, archive.open(info, "w") as target:
                _copy(source, target, tick)


def _write_tgz(
    raw: IO[bytes], members: Sequence[Member], model_name: str, epoch: int, tick: Progress
) -> None:
    folders = {model_name}
    for member in members:
        parts = member.arcname.split("/")[:-1]
        folders.update(f"{model_name}/{'/'.join(parts[: i + 1])}" for i in range(len(parts)))
    items: list[tuple[str, Member | None]] = [(folder, None) for folder in folders]
    items += [(f"{model_name}/{member.arcname}", member) for member in members]
    items.sort(key=lambda item: item[0])
    # filename="" keeps the temp file's name out of the gzip header; mtime pins the header time.
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=epoch, compresslevel=6) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, entry in items:
            info = tarfile.TarInfo(name)
            info.mtime = epoch
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if entry is None:
                info.type = tarfile.DIRTYPE
                info.mode = DIR_MODE
                tar.addfile(info)
                continue
            info.mode = FILE_MODE
            info.size = entry.size
            with entry.open() as source:
                tar.addfile(info, _CountingReader(source, tick))


def _write_folder(
    members: Sequence[Member],
    final: Path,
    *,
    model_name: str,
    epoch: int,
    force: bool,
    tick: Progress,
) -> str:
    staging = Path(tempfile.mkdtemp(prefix=f".{model_name}.", suffix=".partial", dir=final.parent))
    try:
        lines: list[str] = []
        folders: set[Path] = set()
        for member in members:
            target = staging / member.arcname
            target.parent.mkdir(parents=True, exist_ok=True)
            folders.update(p for p in target.parents if p.is_relative_to(staging))
            digest = hashlib.sha256()
            with member.open() as source, open(target, "xb") as out:
                _copy(source, _HashingWriter(out, digest), tick)
            target.chmod(FILE_MODE)
            os.utime(target, (epoch, epoch))
            lines.append(f"{digest.hexdigest()}  {member.arcname}\n")
        # Deepest first, so setting a parent's time is not undone by touching a child.
        for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            folder.chmod(DIR_MODE)
            os.utime(folder, (epoch, epoch))
        _publish_folder(staging, final, force)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _publish_file(temp: Path, final: Path, force: bool) -> None:
    if force:
        if final.is_dir() and not final.is_symlink():
            raise ArchiveError(f"{final} exists and is a folder; remove it first")
        os.replace(temp, final)
        return
    try:
        # A hard link fails if the name is taken, so a racing writer cannot be overwritten.
        os.link(temp, final)
    except FileExistsError:
        raise ArchiveError(f"{final} already exists; pass -f/--force to overwrite it") from None
    except OSError:
        if final.exists():
            raise ArchiveError(f"{final} already exists; pass -f/--force to overwrite it") from None
        os.replace(temp, final)
        return
    temp.unlink()


def _publish_folder(staging: Path, final: Path, force: bool) -> None:
    if final.exists() or final.is_symlink():
        if not force:
            raise ArchiveError(f"{final} already exists; pass -f/--force to overwrite it")
        if final.is_dir() and not final.is_symlink():
            # Move the old folder aside first so the new one appears in a single rename.
            trash = Path(
                tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent)
            )
            os.rename(final, trash / "old")
            os.rename(staging, final)
            shutil.rmtree(trash, ignore_errors=True)
            return
        final.unlink()
    os.rename(staging, final)


def _copy(source: IO[bytes], target: _Sink, tick: Progress) -> None:
    while chunk := source.read(_CHUNK):
        target.write(chunk)
        tick(len(chunk))


class _CountingReader:
    """Reports bytes to the progress callback as tarfile pulls them."""

    def __init__(self, source: IO[bytes], tick: Progress) -> None:
        self._source = source
        self._tick = tick

    def read(self, size: int = -1) -> bytes:
        chunk = self._source.read(size)
        self._tick(len(chunk))
        return chunk


class _HashingWriter:
    def __init__(self, target: IO[bytes], digest: _Digest) -> None:
        self._target = target
        self._digest = digest

    def write(self, chunk: bytes) -> int:
        self._digest.update(chunk)
        return self._target.write(chunk)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def tree_sha256(root: Path) -> str:
    """The no-archive digest of an existing folder (same definition as ``write_archive``)."""
    lines = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        lines.append(f"{_file_sha256(path)}  {path.relative_to(root).as_posix()}\n")
    lines.sort(key=lambda line: line.split("  ", 1)[1])
    return hashlib.sha256("".join(lines).encode()).hexdigest()
