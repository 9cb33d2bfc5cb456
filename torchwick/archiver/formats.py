"""Per-format listing, reading and extraction behind one small interface.

Each reader lists its members in the constructor and refuses the archive there (through
``safety``) if any member breaks a rule, so a reader that exists has an acceptable listing.
``extract`` writes into a folder the caller has just created and owns: it never follows links
(there are none to follow, the listing refused them) and opens files with ``O_EXCL``.
"""

from __future__ import annotations

import os
import stat
import tarfile
import zipfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import IO

from .errors import UnsafeArchiveError
from .safety import ArchiveLimits, ByteBudget, Entry, ListingChecker, clean_name
from .zipdir import check_zip_directory

_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}


class ArchiveReader(ABC):
    """A checked listing plus ways to read one member and to extract all of them."""

    kind: str
    #: Bytes of the archive file on disk (``None`` for a folder): the compression ratio base.
    size: int | None = None

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self._by_name: dict[str, Entry] = {}

    def _accept(self, entries: list[Entry]) -> None:
        self.entries = [entry for entry in entries if entry.name]
        self._by_name = {entry.name: entry for entry in self.entries}

    def lookup(self, name: str) -> Entry | None:
        """The member with this normalised name, if any."""
        return self._by_name.get(name)

    @abstractmethod
    def read(self, entry: Entry, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` bytes of a file member."""

    @abstractmethod
    def extract(self, into: Path, budget: ByteBudget) -> None:
        """Write every member below ``into`` (an empty folder), counting bytes in ``budget``."""

    def close(self) -> None:  # noqa: B027 - only readers holding a file override it
        """Release the underlying file."""


def _write_member(into: Path, entry: Entry, source: IO[bytes], budget: ByteBudget) -> None:
    target = into / entry.name
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "xb") as out:
        budget.copy(source, out, entry)


class ZipReader(ArchiveReader):
    """``.mar`` files: zip, stored or deflated (bzip2 and lzma are read too)."""

    kind = "zip"

    def __init__(self, path: Path, limits: ArchiveLimits) -> None:
        super().__init__()
        # Count from the end record first: ZipFile reads the whole directory into memory.
        check_zip_directory(path, limits.max_entries)
        self.size = path.stat().st_size
        self._zip = zipfile.ZipFile(path)
        try:
            checker = ListingChecker(limits, self.size)
            entries: list[Entry] = []
            self._infos: dict[str, zipfile.ZipInfo] = {}
            for info in self._zip.infolist():
                entry = _zip_entry(info)
                checker.add(entry)
                entries.append(entry)
                self._infos[entry.name] = info
            self._accept(entries)
        except BaseException:
            self._zip.close()
            raise

    def read(self, entry: Entry, max_bytes: int) -> bytes:
        with self._zip.open(self._infos[entry.name]) as member:
            return member.read(max_bytes)

    def extract(self, into: Path, budget: ByteBudget) -> None:
        for entry in self.entries:
            if entry.is_dir:
                (into / entry.name).mkdir(parents=True, exist_ok=True)
                continue
            with self._zip.open(self._infos[entry.name]) as member:
                _write_member(into, entry, member, budget)

    def close(self) -> None:
        self._zip.close()


def _zip_entry(info: zipfile.ZipInfo) -> Entry:
    name = clean_name(info.filename)
    if info.flag_bits & 0x1:
        raise UnsafeArchiveError(info.filename, "encrypted entry")
    # The high 16 bits of external_attr carry a Unix st_mode when the archiver recorded one;
    # a symlink stored this way would be recreated as a link by unzip-like tools.
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFLNK:
        raise UnsafeArchiveError(info.filename, "symbolic link")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise UnsafeArchiveError(info.filename, "special file (device, FIFO or socket)")
    if info.compress_type not in _ZIP_METHODS:
        raise UnsafeArchiveError(
            info.filename, f"unsupported compression method {info.compress_type}"
        )
    is_dir = info.is_dir() or kind == stat.S_IFDIR
    return Entry(name, 0 if is_dir else info.file_size, is_dir, info.filename)


class TarReader(ArchiveReader):
    """``.tar.gz`` (any compression tarfile detects); a single top-level folder is dropped."""

    kind = "tgz"

    def __init__(self, path: Path, limits: ArchiveLimits) -> None:
        super().__init__()
        self.size = path.stat().st_size
        self._tar = tarfile.open(path, mode="r:*")  # noqa: SIM115 - closed by close()
        try:
            # Declared sizes are checked header by header, before a member's data is inflated.
            checker = ListingChecker(limits, self.size)
            listed: list[tuple[Entry, tarfile.TarInfo]] = []
            # Iterating reads one header at a time, so the checker stops a huge listing early.
            for member in self._tar:
                entry = _tar_entry(member)
                checker.add(entry)
                listed.append((entry, member))
            prefix = _single_top_folder([entry for entry, _ in listed])
            entries: list[Entry] = []
            self._members: dict[str, tarfile.TarInfo] = {}
            for listed_entry, member in listed:
                entry = listed_entry
                if prefix is not None:
                    stripped = "" if entry.name == prefix else entry.name[len(prefix) + 1 :]
                    entry = Entry(stripped, entry.size, entry.is_dir, entry.stored_name)
                entries.append(entry)
                self._members[entry.name] = member
            self._accept(entries)
        except BaseException:
            self._tar.close()
            raise

    def read(self, entry: Entry, max_bytes: int) -> bytes:
        member = self._tar.extractfile(self._members[entry.name])
        if member is None:  # cannot happen for a checked regular file; keeps mypy honest
            return b""
        with member:
            return member.read(max_bytes)

    def extract(self, into: Path, budget: ByteBudget) -> None:
        for entry in self.entries:
            if entry.is_dir:
                (into / entry.name).mkdir(parents=True, exist_ok=True)
                continue
            member = self._tar.extractfile(self._members[entry.name])
            if member is None:
                raise UnsafeArchiveError(entry.stored_name, "not a regular file")
            with member:
                _write_member(into, entry, member, budget)

    def close(self) -> None:
        self._tar.close()


def _tar_entry(member: tarfile.TarInfo) -> Entry:
    name = clean_name(member.name)
    if member.issym():
        raise UnsafeArchiveError(member.name, "symbolic link")
    if member.islnk():
        raise UnsafeArchiveError(member.name, "hard link")
    if member.ischr() or member.isblk():
        raise UnsafeArchiveError(member.name, "device file")
    if member.isfifo():
        raise UnsafeArchiveError(member.name, "FIFO")
    if member.issparse():
        raise UnsafeArchiveError(member.name, "sparse file")
    if member.isdir():
        return Entry(name, 0, True, member.name)
    if not member.isfile():
        raise UnsafeArchiveError(member.name, "unsupported entry type")
    return Entry(name, member.size, False, member.name)


def _single_top_folder(entries: list[Entry]) -> str | None:
    """The one folder everything sits in (TorchServe's tgz layout), unless that is MAR-INF."""
    tops = {entry.name.split("/", 1)[0] for entry in entries if entry.name}
    if len(tops) != 1:
        return None
    top = tops.pop()
    if top == "MAR-INF":
        return None
    if any(entry.name == top and not entry.is_dir for entry in entries):
        return None
    return top


class DirectoryReader(ArchiveReader):
    """A no-archive model folder, checked in place: links must stay inside it."""

    kind = "directory"

    def __init__(self, path: Path, limits: ArchiveLimits) -> None:
        super().__init__()
        self._root = path
        real_root = path.resolve()
        checker = ListingChecker(limits)
        entries: list[Entry] = []
        for folder, dirnames, filenames in os.walk(path):
            dirnames.sort()
            for name in sorted(dirnames) + sorted(filenames):
                full = Path(folder) / name
                relative = full.relative_to(path).as_posix()
                clean_name(relative)
                if full.is_symlink():
                    target = full.resolve()
                    if not target.is_relative_to(real_root):
                        raise UnsafeArchiveError(
                            relative, "symbolic link pointing outside the model folder"
                        )
                info = full.stat()
                if stat.S_ISDIR(info.st_mode):
                    entry = Entry(relative, 0, True, relative)
                elif stat.S_ISREG(info.st_mode):
                    entry = Entry(relative, info.st_size, False, relative)
                else:
                    raise UnsafeArchiveError(relative, "special file (device, FIFO or socket)")
                checker.add(entry)
                entries.append(entry)
        self._accept(entries)

    def read(self, entry: Entry, max_bytes: int) -> bytes:
        with open(self._root / entry.name, "rb") as handle:
            return handle.read(max_bytes)

    def extract(self, into: Path, budget: ByteBudget) -> None:
        raise NotImplementedError("a model folder is used in place, never copied")
