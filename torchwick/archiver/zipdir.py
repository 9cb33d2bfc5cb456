"""Check a zip's central directory from its end record, before ``zipfile`` reads it.

``zipfile.ZipFile`` reads the whole central directory into memory and builds one ``ZipInfo``
per entry before anyone can count them, so an archive listing millions of entries would cost
gigabytes first. ``check_zip_directory`` reads only the end-of-central-directory record (and
its zip64 form) and refuses the archive when the entry count it declares is above
``max_entries``, or when the directory itself is larger than ``max_entries`` entries can
reasonably need. A record that cannot be found is left for ``zipfile`` to report.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from .errors import ArchiveError

_EOCD = struct.Struct("<4s4H2LH")
_EOCD_SIGNATURE = b"PK\x05\x06"
_LOCATOR = struct.Struct("<4sLQL")
_LOCATOR_SIGNATURE = b"PK\x06\x07"
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
_EOCD64_SIGNATURE = b"PK\x06\x06"
_MAX_COMMENT = 0xFFFF
#: Directory bytes allowed per permitted entry: a record is 46 bytes plus the name and extra
#: fields; real archives average well under 200.
DIRECTORY_BYTES_PER_ENTRY = 1024
#: A directory this small is always accepted (few entries with long names or extras).
DIRECTORY_FREE_BYTES = 1 << 20


def check_zip_directory(path: Path, max_entries: int) -> None:
    """Raise ``ArchiveError`` when ``path``'s end record declares more than ``max_entries``
    entries or an oversized central directory; return quietly when all is well or when there
    is no end record to read (``zipfile`` then says what is wrong)."""
    found = _directory_size(path)
    if found is None:
        return
    count, size = found
    if count > max_entries:
        raise ArchiveError(
            f"{path.name}: the zip directory lists {count} entries, more than "
            f"max_archive_entries={max_entries}"
        )
    allowed = max(max_entries * DIRECTORY_BYTES_PER_ENTRY, DIRECTORY_FREE_BYTES)
    if size > allowed:
        raise ArchiveError(
            f"{path.name}: the zip directory is {size} bytes, more than {allowed} bytes "
            f"allowed for max_archive_entries={max_entries}"
        )


def _directory_size(path: Path) -> tuple[int, int] | None:
    """(entry count, directory size) from the end record, or None when there is none."""
    with open(path, "rb") as handle:
        file_size = handle.seek(0, os.SEEK_END)
        tail_size = min(file_size, _EOCD.size + _MAX_COMMENT)
        if tail_size < _EOCD.size:
            return None
        handle.seek(file_size - tail_size)
        tail = handle.read(tail_size)
        position = tail.rfind(_EOCD_SIGNATURE)
        if position < 0 or position + _EOCD.size > len(tail):
            return None
        fields = _EOCD.unpack_from(tail, position)
        count, size, offset = fields[4], fields[5], fields[6]
        if count != 0xFFFF and size != 0xFFFFFFFF and offset != 0xFFFFFFFF:
            return count, size
        # zip64: the locator sits just before the end record, the zip64 record before that.
        record_at = file_size - tail_size + position
        if record_at < _LOCATOR.size + _EOCD64.size:
            return None
        handle.seek(record_at - _LOCATOR.size - _EOCD64.size)
        data = handle.read(_EOCD64.size + _LOCATOR.size)
        if data[_EOCD64.size : _EOCD64.size + 4] != _LOCATOR_SIGNATURE:
            return None
        record = _EOCD64.unpack_from(data, 0)
        if record[0] != _EOCD64_SIGNATURE:
            return None
        return record[7], record[8]
