"""Warm spare workers: processes spawned ahead of need that a new worker takes over.

A cold worker costs an interpreter start, the import of torch and of the handler runtime
before its model can load: most of a register's time for a small model. ``WarmSpares`` keeps
``count`` worker processes that have done all of that (``warm.py``) and wait, connected and
authenticated (spawn token, ``-P``, the supervisor's worker environment, exactly like any
worker), for a LOAD frame. ``WorkerSupervisor.new_worker`` (register, scale-up, restart) takes
one when its ``WarmProfile`` equals the new worker's, adopts it and sends LOAD; otherwise the
worker starts cold. A spare is not a model worker: it is in no pool, has no slot, no GPU and no
share of the thread budget, and is not in describe or the worker metrics.

Each spare *seat* is a task: spawn a spare; when it is taken, wait until the taker's load
ended (``settled``) so that the replacement's torch import does not compete with that load,
then spawn the next one. A spare that dies or cannot start is replaced after capped
exponential backoff (``BackoffPolicy``); the first failure of a streak is logged as a warning,
the rest at debug level, and a recovery once. A spare whose profile no longer matches the next
worker's (slots closed, so a new worker would get another thread budget) is stopped and
replaced (``refresh``). ``close`` stops every spare (SHUTDOWN, then SIGKILL after the grace
period) and waits until each has exited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .backoff import Backoff, BackoffPolicy
from .config import WorkerStatus
from .process import WorkerProcess
from .process_facts import LoadFailedError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WarmProfile:
    """What is fixed in a worker process before torch is imported; a spare fits only a worker
    with an equal profile. Today that is the thread budget (OpenMP and MKL size their pools
    from it); the environment is the supervisor's one worker environment for every worker."""

    threads: int


#: ``(serial number, profile)`` -> a not yet spawned spare process (``--warm-threads``).
SpareFactory = Callable[[int, WarmProfile], WorkerProcess]


class _End(Enum):
    TAKEN = "taken"
    STALE = "stale"
    CLOSED = "closed"


class _Seat:
    __slots__ = ("ended", "profile", "ready", "settled", "task", "wake", "worker")

    def __init__(self) -> None:
        self.worker: WorkerProcess | None = None
        self.profile: WarmProfile | None = None
        self.ready = False
        #: Resolved with why the ready spare left the seat (taken, stale, closing).
        self.ended: asyncio.Future[_End] | None = None
        #: Resolved when the taker's load ended (see ``settled``).
        self.settled: asyncio.Future[None] | None = None
        #: Resolved to cut a backoff wait short (closing).
        self.wake: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None


class WarmSpares:
    """``count`` warm spares (0: none), spawned by ``factory`` for the profile ``profile()``
    says the next worker will have. ``spawn_timeout_s`` bounds one spare's start;
    ``stop_grace_s`` its shutdown. ``clock``/``sleep`` drive the backoff."""

    def __init__(
        self,
        count: int,
        factory: SpareFactory,
        profile: Callable[[], WarmProfile],
        *,
        backoff: BackoffPolicy,
        spawn_timeout_s: float,
        stop_grace_s: float,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[Any]],
    ) -> None:
        self._count = max(0, count)
        self._factory = factory
        self._profile = profile
        self._backoff = backoff
        self._spawn_timeout_s = spawn_timeout_s
        self._stop_grace_s = stop_grace_s
        self._clock = clock
        self._sleep = sleep
        self._seats: list[_Seat] = []
        self._serial = 0
        self._closed = False

    @property
    def count(self) -> int:
        """Spares kept (the ``warm_workers`` setting)."""
        return self._count

    def ready(self) -> list[tuple[int, WarmProfile]]:
        """``(pid, profile)`` of each spare ready to be taken now."""
        return [
            (s.worker.pid, s.profile)
            for s in self._seats
            if s.ready and s.worker is not None and s.worker.pid is not None and s.profile
        ]

    def start(self) -> None:
        """Start the seats (once; nothing when ``count`` is 0 or after ``close``)."""
        if self._seats or self._closed:
            return
        for number in range(self._count):
            seat = _Seat()
            seat.task = asyncio.create_task(self._run_seat(seat), name=f"warm-spare-{number}")
            self._seats.append(seat)

    def take(self, profile: WarmProfile) -> WorkerProcess | None:
        """A ready spare whose profile equals ``profile``, now the caller's; else ``None``.

        The caller must ``adopt`` it and call ``settled`` once its load ended (loaded or not).
        """
        for seat in self._seats:
            worker = seat.worker
            if not seat.ready or worker is None or seat.profile != profile:
                continue
            if worker.exited.done() or worker.channel.closed_reason is not None:
                continue  # died a moment ago; its seat replaces it
            seat.ready = False
            seat.settled = asyncio.get_running_loop().create_future()
            _end(seat, _End.TAKEN)
            return worker
        return None

    def settled(self, worker: WorkerProcess) -> None:
        """The worker taken from a spare finished loading (or failed): replace it now."""
        for seat in self._seats:
            if seat.worker is worker and seat.settled is not None and not seat.settled.done():
                seat.settled.set_result(None)

    def refresh(self) -> None:
        """Replace ready spares whose profile no longer matches the next worker's."""
        if self._closed:
            return
        wanted = self._profile()
        for seat in self._seats:
            if seat.ready and seat.profile != wanted:
                seat.ready = False
                _end(seat, _End.STALE)

    async def close(self) -> None:
        """Stop every spare and wait until each process has exited."""
        self._closed = True
        for seat in self._seats:
            if seat.wake is not None and not seat.wake.done():
                seat.wake.set_result(None)
            if seat.settled is not None and not seat.settled.done():
                seat.settled.set_result(None)
            if seat.ready:
                seat.ready = False
                _end(seat, _End.CLOSED)
            elif seat.worker is not None and seat.ended is None:
                # Still starting: an expected end, not a failure to report.
                seat.worker.status = WorkerStatus.UNLOADING
                seat.worker.kill("server stopping", expected=True)
        await asyncio.gather(*(s.task for s in self._seats if s.task), return_exceptions=True)

    # ---- one seat ----------------------------------------------------------------------------

    async def _run_seat(self, seat: _Seat) -> None:
        backoff = Backoff(self._backoff, self._clock)
        streak = _Streak()
        while not self._closed:
            profile = self._profile()
            self._serial += 1
            seat.worker, seat.profile, seat.ended, seat.settled = None, profile, None, None
            try:
                worker = self._factory(self._serial, profile)
                seat.worker = worker
                await worker.start(self._spawn_timeout_s, load=False)
            except Exception as exc:
                if not isinstance(exc, LoadFailedError):  # a bug must not end the seat
                    logger.exception("starting a warm spare worker failed")
                if seat.worker is not None:
                    seat.worker.kill("spare start failed")
                    await seat.worker.exited
                seat.worker = None
                if self._closed:
                    return
                reason = exc.message if isinstance(exc, LoadFailedError) else str(exc)
                await self._pause(seat, backoff, streak, f"could not start: {reason}")
                continue
            if self._closed:
                await self._stop(worker)
                return
            if profile != self._profile():
                # Slots closed while it started: the next worker will not fit it.
                await self._stop(worker)
                continue
            if streak.warned:
                logger.info("warm spare workers start again after %d failures", backoff.failures)
                streak.warned = False
            backoff.started()
            ended: asyncio.Future[_End] = asyncio.get_running_loop().create_future()
            seat.ended, seat.ready = ended, True
            logger.info("warm spare worker ready (pid %s, %d threads)", worker.pid, profile.threads)
            either: set[asyncio.Future[Any]] = {ended, worker.exited}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            seat.ready = False
            why = ended.result() if ended.done() else None
            if why is _End.TAKEN:
                backoff.reset()
                settled = seat.settled
                if settled is not None:
                    # The taker's LOAD first; the replacement's torch import would slow it.
                    watched: set[asyncio.Future[Any]] = {settled, worker.exited}
                    await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                seat.worker = None
                continue
            if why is not None:  # stale or closing
                await self._stop(worker)
                seat.worker = None
                continue
            returncode = await worker.exited
            seat.worker = None
            if not self._closed:
                await self._pause(
                    seat, backoff, streak, f"exited (code {returncode}) while waiting"
                )

    async def _stop(self, worker: WorkerProcess) -> None:
        with contextlib.suppress(Exception):
            await worker.stop(self._stop_grace_s)

    async def _pause(self, seat: _Seat, backoff: Backoff, streak: _Streak, what: str) -> None:
        delay = backoff.failed()
        # One warning per failure streak (until a spare is ready again), not one per attempt:
        # a spare that cannot start (torch broken, memory short) must not flood the log.
        level = logging.DEBUG if streak.warned else logging.WARNING
        streak.warned = True
        logger.log(level, "a warm spare worker %s; retrying in %.1f s", what, delay)
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        seat.wake = wake
        sleeping: asyncio.Future[Any] = asyncio.ensure_future(self._sleep(delay))
        try:
            await asyncio.wait({sleeping, wake}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            seat.wake = None
            sleeping.cancel()
            wake.cancel()


class _Streak:
    __slots__ = ("warned",)

    def __init__(self) -> None:
        self.warned = False


def _end(seat: _Seat, why: _End) -> None:
    if seat.ended is not None and not seat.ended.done():
        seat.ended.set_result(why)
