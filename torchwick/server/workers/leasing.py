"""Handing idle workers to batches: the lease, and the idle set with its waiters.

The hot path is ``IdleWorkers.take``: a deque pop and a flag, no await. When no worker is
idle, ``wait`` parks a future that ``give`` fulfils directly (no wake-up-and-retry), in the
order the waiters came.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from .process import WorkerProcess


class WorkerLease:
    """One idle worker reserved for one batch; ``run_batch`` or ``release`` gives it back."""

    __slots__ = ("_worker",)

    def __init__(self, worker: WorkerProcess) -> None:
        self._worker: WorkerProcess | None = worker

    @property
    def worker_id(self) -> str:
        """The reserved worker's id ("9000"); empty once the lease was used."""
        return "" if self._worker is None else str(self._worker.worker_id)

    def take(self) -> WorkerProcess:
        """The worker, once; a second use raises ``RuntimeError``."""
        worker = self._worker
        if worker is None:
            raise RuntimeError("this worker lease was already used or released")
        self._worker = None
        return worker


class IdleWorkers:
    """Loaded, unleased workers (FIFO) and the acquirers waiting for one.

    A worker that became unusable while idle (it died, or is being retired) is skipped when
    taken, so a death needs no bookkeeping here beyond ``discard``.
    """

    def __init__(self) -> None:
        self._idle: deque[WorkerProcess] = deque()
        self._waiters: deque[asyncio.Future[WorkerProcess]] = deque()

    def take(self) -> WorkerProcess | None:
        """An idle, usable worker marked leased, or ``None``."""
        idle = self._idle
        while idle:
            worker = idle.popleft()
            if worker.usable:
                worker.leased = True
                return worker
        return None

    def give(self, worker: WorkerProcess) -> None:
        """Return a usable worker: straight to the oldest waiter, else to the idle set."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                worker.leased = True
                waiter.set_result(worker)
                return
        worker.leased = False
        self._idle.append(worker)

    async def wait(self) -> WorkerProcess:
        """The next worker given back, marked leased. Cancel-safe: a worker handed over as
        the caller is cancelled is given back again."""
        waiter: asyncio.Future[WorkerProcess] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                worker = waiter.result()
                if worker.usable:
                    self.give(worker)
                else:
                    worker.leased = False
            raise

    def discard(self, worker: WorkerProcess) -> None:
        """Forget an idle worker (it is stopping or gone)."""
        with contextlib.suppress(ValueError):
            self._idle.remove(worker)

    def fail_waiters(self, error: Exception) -> None:
        """Wake every waiter with ``error``."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    def usable_count(self) -> int:
        """Idle workers that could be taken now."""
        return sum(1 for w in self._idle if w.usable)
