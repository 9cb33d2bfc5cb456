"""Containment rules shared by every archive format, applied before anything is written.

Each archive is first turned into a list of ``Entry`` values: names are normalised here and an
entry that could escape the destination (``..``, absolute paths, drive letters, backslashes) or
is not a plain file or directory is refused by the format reader. ``ListingChecker`` then
enforces the limits over the whole listing (entry count, declared uncompressed total,
duplicates, a name that is both a file and a directory), and ``ByteBudget`` enforces the same
total again on the bytes actually produced while extracting, because declared sizes can lie.
Both also hold an archive to ``max_compression_ratio`` times its own size on disk (beyond the
first ``RATIO_FREE_BYTES``), so a small archive cannot fill the disk: ``ByteBudget`` refuses the
chunk that would pass a limit before writing it, and the caller deletes what was written.
All refusals raise ``UnsafeArchiveError`` naming the entry and the rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import IO

from .errors import ArchiveError, UnsafeArchiveError

_DRIVE = re.compile(r"^[A-Za-z]:")
_CHUNK = 1 << 20


#: What any archive may expand to whatever its compression ratio: a small test model with a
#: zero-filled tensor compresses a thousandfold and must still load.
RATIO_FREE_BYTES = 64 << 20


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    """Upper bounds for one archive. The defaults fit multi-GB LLM weights and big tokenizers.

    ``max_compression_ratio`` bounds the bytes extracted to that many times the archive's size
    on disk (never below ``RATIO_FREE_BYTES``); model weights compress about 1.1:1, text about
    10:1, a zip bomb 1000:1 and more.
    """

    max_entries: int = 20_000
    max_total_bytes: int = 64 << 30
    max_compression_ratio: float = 100.0

    def expansion_limit(self, archive_size: int | None) -> tuple[int, str]:
        """The most bytes an archive of ``archive_size`` bytes (``None``: a folder, no ratio)
        may produce, and the rule to name when it produces more."""
        total = (
            self.max_total_bytes,
            f"uncompressed total exceeds {self.max_total_bytes} bytes "
            "(max_archive_uncompressed_size)",
        )
        if archive_size is None:
            return total
        by_ratio = max(int(self.max_compression_ratio * archive_size), RATIO_FREE_BYTES)
        if by_ratio >= self.max_total_bytes:
            return total
        return by_ratio, (
            f"expands to more than {self.max_compression_ratio:g} times the archive's "
            f"{archive_size} bytes (max_archive_compression_ratio)"
        )


@dataclass(frozen=True, slots=True)
class Entry:
    """One member of an archive: ``name`` is the normalised relative POSIX path."""

    name: str
    size: int
    is_dir: bool
    #: The member's name as stored (for reading it back and for messages).
    stored_name: str


def clean_name(stored: str) -> str:
    """Normalise a stored member name to a relative POSIX path, or raise if it could escape.

    Returns ``""`` for names that denote the archive root itself (``./``).
    """
    if not stored:
        raise UnsafeArchiveError(stored, "empty name")
    if "\x00" in stored:
        raise UnsafeArchiveError(stored, "NUL character in name")
    if "\\" in stored:
        # On Windows a backslash is a separator, so "..\\x" would escape there.
        raise UnsafeArchiveError(stored, "backslash in name")
    if stored.startswith("/"):
        raise UnsafeArchiveError(stored, "absolute path")
    if _DRIVE.match(stored):
        raise UnsafeArchiveError(stored, "absolute path (drive letter)")
    parts = [part for part in stored.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(stored, "parent directory reference '..'")
    return "/".join(parts)


def check_inner_path(value: str, *, field: str) -> str:
    """Check a path named inside the manifest (``serializedFile`` ...) stays in the archive."""
    try:
        return clean_name(value)
    except UnsafeArchiveError as exc:
        raise ArchiveError(
            f"manifest {field} {value!r} points outside the archive ({exc.rule})"
        ) from exc


class ListingChecker:
    """Accumulates entries one at a time and raises as soon as a limit or rule is broken.

    Streaming formats (tar) feed it while reading headers, so an archive with a million entries
    is refused after ``max_entries + 1`` headers rather than after all of them.
    """

    def __init__(self, limits: ArchiveLimits, archive_size: int | None = None) -> None:
        self._limits = limits
        self._limit, self._rule = limits.expansion_limit(archive_size)
        self._files: dict[str, Entry] = {}
        self._dirs: set[str] = set()
        self._count = 0
        self._total = 0

    def add(self, entry: Entry) -> None:
        """Record ``entry``; raise ``UnsafeArchiveError`` if it breaks a rule."""
        self._count += 1
        if self._count > self._limits.max_entries:
            raise UnsafeArchiveError(
                entry.stored_name,
                f"more than {self._limits.max_entries} entries (max_archive_entries)",
            )
        if entry.size < 0:
            raise UnsafeArchiveError(entry.stored_name, "negative size")
        self._total += entry.size
        if self._total > self._limit:
            raise UnsafeArchiveError(entry.stored_name, self._rule)
        if not entry.name:
            return
        parents = _parents(entry.name)
        for parent in parents:
            if parent in self._files:
                raise UnsafeArchiveError(entry.stored_name, f"{parent!r} is a file, not a folder")
        if entry.is_dir:
            if entry.name in self._files:
                raise UnsafeArchiveError(entry.stored_name, "is both a file and a folder")
            self._dirs.add(entry.name)
        else:
            if entry.name in self._files:
                raise UnsafeArchiveError(entry.stored_name, "duplicate entry")
            if entry.name in self._dirs:
                raise UnsafeArchiveError(entry.stored_name, "is both a file and a folder")
            self._files[entry.name] = entry
        self._dirs.update(parents)

    @property
    def total_bytes(self) -> int:
        """Declared uncompressed bytes seen so far."""
        return self._total


class ByteBudget:
    """Counts the bytes really written while extracting, per entry and in total.

    A chunk that would pass the member's declared size or the archive's expansion limit is
    refused before it is written, so at most the limit is ever on disk.
    """

    def __init__(self, limits: ArchiveLimits, archive_size: int | None = None) -> None:
        self._limit, self._rule = limits.expansion_limit(archive_size)
        self.written = 0

    def copy(self, source: IO[bytes], target: IO[bytes], entry: Entry) -> None:
        """Copy one member, refusing it once it yields more than it declared or the limit."""
        produced = 0
        while chunk := source.read(_CHUNK):
            produced += len(chunk)
            if produced > entry.size:
                raise UnsafeArchiveError(entry.stored_name, "more data than its declared size")
            if self.written + len(chunk) > self._limit:
                raise UnsafeArchiveError(entry.stored_name, self._rule)
            self.written += len(chunk)
            target.write(chunk)
        if produced != entry.size:
            raise UnsafeArchiveError(entry.stored_name, "less data than its declared size")


def _parents(name: str) -> list[str]:
    parts = name.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]
