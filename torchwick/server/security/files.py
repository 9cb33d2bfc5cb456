"""Writing small private files (key file, PID file) so they are never readable by others.

The content goes to a fresh temporary file in the same directory, created with mode 0600 by
``os.open`` (so no moment exists where it has wider permissions), flushed to disk, then renamed
over the target. Readers see the old file or the new one, never a partial one; a symlink at the
target is replaced, not followed.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

PRIVATE_MODE = 0o600


def write_private_file(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``, mode 0600 from creation on.

    Raises ``OSError`` when the directory is missing or not writable; nothing is left behind.
    """
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    descriptor = os.open(temporary, flags, PRIVATE_MODE)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
