"""A log file written off the event loop: entries are queued cheaply, formatted and written
in batches by one background thread.

``record`` runs on the event loop (often on the hot path), so it only appends to a list.
Once per ``interval`` seconds (or when ``max_lines`` entries are waiting) the batch is handed
to the writer thread, which formats it with ``format_batch`` and appends it to the file: the
loop never blocks on the file, and the thread wakes at most a few times a second, which
matters on a 2-core machine.

If the file cannot be opened or written, the failure is logged once and entries are dropped;
serving never fails because of a log file.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Generic, TypeVar

log = logging.getLogger(__name__)

EntryT = TypeVar("EntryT")


class BatchedLineFile(Generic[EntryT]):
    """Buffered, batched writer of one append-only text file; see the module docs."""

    def __init__(
        self,
        path: Path,
        format_batch: Callable[[list[EntryT]], str],
        *,
        interval: float = 1.0,
        max_lines: int = 8192,
    ) -> None:
        self.path = path
        self.interval = interval
        self.max_lines = max_lines
        self._format_batch = format_batch
        self._pending: list[EntryT] = []
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=path.stem)
        self._file: IO[str] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broken = False
        self._closed = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Open the file (creating its folder) and start the periodic flush on ``loop``.

        An unwritable file is logged once and leaves this log off."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held open
        except OSError as exc:
            log.error("%s cannot be opened; this log is off: %s", self.path, exc)
            self._closed = True
            return
        self._loop = loop
        self._timer = loop.call_later(self.interval, self._tick)

    def record(self, entry: EntryT) -> None:
        """Queue one entry (one list append; formatting and I/O happen later)."""
        if self._closed:
            return
        self._pending.append(entry)
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

    def _write(self, batch: list[EntryT]) -> None:
        if self._file is None or self._broken:
            return
        try:
            self._file.write(self._format_batch(batch))
            self._file.flush()
        except OSError as exc:
            self._broken = True
            log.error("%s is not writable, no more lines will be written: %s", self.path, exc)

    def close(self) -> None:
        """Stop the timer, write what is pending and close the file (blocks until done).
        Entries recorded afterwards are dropped."""
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
