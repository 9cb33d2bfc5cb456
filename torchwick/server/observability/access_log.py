"""The access log (``<log_location>/access_log.log``), kept off the request path.

Line format (TorchServe's message, preceded by a timestamp):
``2024-05-01T12:00:00.123 /127.0.0.1:53022 "POST /predictions/mlp HTTP/1.1" 200 3``
with the last field the response time in milliseconds. Lines are queued on the event loop and
written in batches by ``BatchedLineFile``; an unwritable file never fails a request.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from .line_file import BatchedLineFile

Entry = tuple[float, tuple[str, int] | None, str, str, bytes, str, int, float]


def _format(batch: list[Entry]) -> str:
    lines = []
    for stamp, client, method, path, query, version, status, ms in batch:
        local = time.localtime(stamp)
        millis = int((stamp % 1) * 1000)
        peer = f"/{client[0]}:{client[1]}" if client else "/unix"
        target = f"{path}?{query.decode('latin-1')}" if query else path
        lines.append(
            f"{time.strftime('%Y-%m-%dT%H:%M:%S', local)}.{millis:03d} {peer} "
            f'"{method} {target} HTTP/{version}" {status} {ms:.0f}\n'
        )
    return "".join(lines)


class AccessLog:
    """Buffered, batched access log writer; see the module docs."""

    def __init__(self, path: Path, *, interval: float = 1.0, max_lines: int = 8192) -> None:
        self.path = path
        self._file: BatchedLineFile[Entry] = BatchedLineFile(
            path, _format, interval=interval, max_lines=max_lines
        )

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Open the file and start the periodic flush on ``loop`` (see ``BatchedLineFile``)."""
        self._file.start(loop)

    def record(
        self,
        *,
        client: tuple[str, int] | None,
        method: str,
        path: str,
        query: bytes,
        version: str,
        status: int,
        ms: float,
    ) -> None:
        """Queue one line (hot path: one tuple append; formatting and I/O happen later)."""
        self._file.record((time.time(), client, method, path, query, version, status, ms))

    def close(self) -> None:
        """Write what is pending and close the file. Lines recorded afterwards are dropped."""
        self._file.close()
