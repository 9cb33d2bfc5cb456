"""The access log (``<log_location>/access_log.log``), kept off the request path.

``record`` runs on the event loop for every response, so it only appends a tuple to a list.
Once per ``interval`` seconds (or when ``max_lines`` are waiting) the batch is handed to one
background thread that formats and writes it: the loop never blocks on the file, and the
writer thread wakes at most a few times a second, which matters on a 2-core machine.

Line format (TorchServe's message, preceded by a timestamp):
``2024-05-01T12:00:00.123 /127.0.0.1:53022 "POST /predictions/mlp HTTP/1.1" 200 3``
with the last field the response time in milliseconds.

If the file cannot be written, the failure is logged once and lines are dropped; serving
never fails because of the access log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

Entry = tuple[float, tuple[str, int] | None, str, str, bytes, str, int, float]


class AccessLog:
    """Buffered, batched access log writer; see the module docs."""

    def __init__(self, path: Path, *, interval: float = 1.0, max_lines: int = 8192) -> None:
        self.path = path
        self.interval = interval
        self.max_lines = max_lines
        self._pending: list[Entry] = []
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="access-log")
        self._file: IO[str] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broken = False
        self._closed = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Open the file (creating its folder) and start the periodic flush on ``loop``.

        An unwritable file is logged once and leaves the access log off."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held open
        except OSError as exc:
            log.error("access log %s cannot be opened; access logging is off: %s", self.path, exc)
            self._closed = True
            return
        self._loop = loop
        self._timer = loop.call_later(self.interval, self._tick)

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
        if self._closed:
            return
        self._pending.append((time.time(), client, method, path, query, version, status, ms))
        if len(self._pending) >= self.max_lines and self._loop is not None:
            self._flush_async()

    def _tick(self) -> None:
        self._flush_async()
        if self._loop is not None:
            self._timer = self._loop.call_later(self.interval, self._tick)

    def _flush_async(self) -> None:
        if not self._pending or self._closed:
            return
        batch, self._pending = self._pending, []
        self._executor.submit(self._write, batch)

    def _write(self, batch: list[Entry]) -> None:
        if self._file is None or self._broken:
            return
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
        try:
            self._file.write("".join(lines))
            self._file.flush()
        except OSError as exc:
            self._broken = True
            log.error(
                "access log %s is not writable, no more lines will be written: %s", self.path, exc
            )

    def close(self) -> None:
        """Stop the timer, write what is pending and close the file (blocks until done).
        Lines recorded afterwards are dropped."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._flush_async()
        self._closed = True
        self._loop = None
        self._pending = []
        self._executor.shutdown(wait=True)
        if self._file is not None:
            self._file.close()
            self._file = None
