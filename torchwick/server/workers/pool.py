"""The workers of one model version: scaling, leasing, batches, replacement, failure state.

Each wanted worker is a *slot*: a task that starts a worker process, keeps it while it lives,
and restarts it with capped exponential backoff when it dies. A slot keeps its id ("9000")
and its GPU across restarts. Idle, loaded workers wait in a deque; ``acquire`` pops one
without suspending when one is there, else queues a future that ``release`` fulfils directly.

Crash loop: ``max_load_failures`` consecutive failed loads (no successful load in between,
across all slots) put the pool in the *crash-looping* state (``failed`` is True): waiters of
``acquire`` and ``scale(wait=True)`` get ``ModelLoadFailed(last_error)`` while no worker is
ready, but the slots never give up: they keep retrying with capped exponential backoff
(``BackoffPolicy``, 30 s at most by default), so a model whose cause of failure goes away (a
file restored, memory freed) recovers by itself. The first successful load ends the state.
A ``scale`` call retries at once (the backoff is forgotten).

The pool reads its version's ``ModelVersionConfig`` (placement, timeouts) and asks a
``SlotProvider`` (the ``WorkerSupervisor``) for slots and worker processes; it never imports
the supervisor, which owns the pools.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from torchwick.handlers.redact import redact_paths
from torchwick.server.errors import ModelLoadFailed, ServiceUnavailable
from torchwick.server.model_version import ModelVersionConfig

from .backoff import Backoff, BackoffPolicy
from .config import WorkerInfo, WorkerStatus
from .leasing import IdleWorkers
from .pool_batches import PoolBatches
from .process import WorkerProcess
from .process_facts import LoadFailedError
from .slots import SlotProvider

logger = logging.getLogger(__name__)


class _Slot:
    __slots__ = (
        "backoff",
        "created",
        "gpu_id",
        "stopping",
        "task",
        "wake",
        "worker",
        "worker_id",
    )

    def __init__(self, worker_id: int, gpu_id: int | None, backoff: Backoff) -> None:
        self.created = datetime.now(UTC)
        self.worker_id = worker_id
        self.gpu_id = gpu_id
        self.backoff = backoff
        self.worker: WorkerProcess | None = None
        self.task: asyncio.Task[None] | None = None
        #: Set while the slot waits out a backoff; resolving it ends the wait early.
        self.wake: asyncio.Future[None] | None = None
        self.stopping = False


class WorkerPool(PoolBatches):
    """Workers of one model version; built by ``WorkerSupervisor.create_pool`` with target 0.

    ``config`` is the version's config as registered; the pool reads its ``device_type``,
    ``device_ids``, ``startup_timeout`` and ``response_timeout``. The pool reports a crash
    loop after ``max_load_failures`` consecutive failed loads and keeps retrying; stopping a
    worker waits ``stop_grace_s`` for it to exit before killing it.
    """

    def __init__(
        self,
        key: str,
        config: ModelVersionConfig,
        slots: SlotProvider,
        *,
        backoff: BackoffPolicy,
        max_load_failures: int,
        stop_grace_s: float,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[Any]],
    ) -> None:
        self.key = key
        self.config = config
        self._provider = slots
        self._backoff = backoff
        self._max_load_failures = max_load_failures
        self._stop_grace_s = stop_grace_s
        self._clock = clock
        self._sleep = sleep
        self._slots: list[_Slot] = []
        self._retired: set[asyncio.Task[Any]] = set()
        self._idle = IdleWorkers()
        self._changed: asyncio.Future[None] | None = None
        self._load_failures = 0
        self._failed = False
        self._closed = False
        self.last_error: str | None = None
        self.last_error_status: int | None = None

    # ---- state -------------------------------------------------------------------------------

    @property
    def target(self) -> int:
        """Workers this pool keeps running (the last ``scale`` target)."""
        return len(self._slots)

    @property
    def ready_count(self) -> int:
        """Workers loaded and able to take a batch (idle or busy)."""
        return sum(1 for s in self._slots if s.worker is not None and s.worker.usable)

    @property
    def idle_count(self) -> int:
        """Loaded workers not leased right now."""
        return self._idle.usable_count()

    @property
    def failed(self) -> bool:
        """True while crash-looping: the last ``max_load_failures`` loads failed in a row and
        none succeeded since (retries go on); ``last_error`` says why."""
        return self._failed

    @property
    def load_failures(self) -> int:
        """Consecutive failed loads so far (0 after a successful one)."""
        return self._load_failures

    def describe(self) -> list[WorkerInfo]:
        """One row per slot, in slot order."""
        rows = []
        for slot in self._slots:
            worker = slot.worker
            if worker is not None:
                rows.append(worker.info(slot.gpu_id))
            else:
                # No process: either not started yet, or waiting out a backoff after a failure.
                status = WorkerStatus.FAILED if slot.backoff.failures else WorkerStatus.LOADING
                rows.append(
                    WorkerInfo(str(slot.worker_id), None, status, slot.created, slot.gpu_id, 0)
                )
        return rows

    # ---- scaling -----------------------------------------------------------------------------

    async def scale(self, target: int, *, wait: bool) -> int:
        """Run ``target`` workers. Returns ``ready_count`` when waiting, else ``target``.

        Scaling up starts new slots; scaling down stops, in order of preference, slots without
        a process, workers still loading, idle workers, then busy ones once their batch ends.
        A crash-looping pool retries at once. With ``wait``, returns once ``target`` workers
        are ready (or the removed ones have exited); raises ``ModelLoadFailed`` if the pool
        starts crash-looping meanwhile (it keeps retrying in the background).
        """
        if self._closed:
            raise ServiceUnavailable(f"Workers of {self.key} are shut down")
        target = max(0, target)
        if self._failed:
            self._failed = False
            self._load_failures = 0
            for slot in self._slots:
                slot.backoff.reset()
                if slot.wake is not None and not slot.wake.done():
                    slot.wake.set_result(None)
        stopping: list[asyncio.Task[None]] = []
        while len(self._slots) < target:
            self._start_slot()
        if len(self._slots) > target:
            stopping = self._shrink(len(self._slots) - target)
        self._notify()
        if not wait:
            return target
        if stopping:
            await asyncio.gather(*stopping, return_exceptions=True)
        while self.ready_count < len(self._slots):
            if self._failed:
                raise ModelLoadFailed(self._failure_message())
            if self._closed:
                raise ServiceUnavailable(f"Workers of {self.key} are shut down")
            await asyncio.shield(self._change_future())
        return self.ready_count

    def _start_slot(self) -> None:
        worker_id, gpu_id = self._provider.open_slot(self.config, self.key)
        slot = _Slot(worker_id, gpu_id, Backoff(self._backoff, self._clock))
        self._slots.append(slot)
        slot.task = asyncio.create_task(self._run_slot(slot), name=f"worker-{worker_id}")

    def _shrink(self, count: int) -> list[asyncio.Task[None]]:
        def rank(slot: _Slot) -> int:
            worker = slot.worker
            if worker is None:
                return 0
            if worker.status is not WorkerStatus.READY:
                return 1
            return 3 if worker.leased else 2

        # Newest first among equals: the oldest workers are the warmest.
        victims = sorted(reversed(self._slots), key=rank)[:count]
        tasks = []
        for slot in victims:
            self._slots.remove(slot)
            slot.stopping = True
            worker = slot.worker
            if worker is not None and worker.status is WorkerStatus.READY:
                if worker.leased:
                    worker.retiring = True  # stopped by release() after its batch
                else:
                    self._stop_worker(worker)
            elif slot.task is not None:
                slot.task.cancel()
            if slot.task is not None:
                self._retired.add(slot.task)
                slot.task.add_done_callback(self._retired.discard)
                tasks.append(slot.task)
        return tasks

    def _stop_worker(self, worker: WorkerProcess) -> None:
        self._idle.discard(worker)
        if worker.status is WorkerStatus.UNLOADING:
            return  # already being stopped
        worker.status = WorkerStatus.UNLOADING
        task = asyncio.create_task(worker.stop(self._stop_grace_s))
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    # ---- one slot ----------------------------------------------------------------------------

    async def _run_slot(self, slot: _Slot) -> None:
        try:
            await self._slot_loop(slot)
        finally:
            worker = slot.worker
            if worker is not None and not worker.exited.done():
                worker.kill("worker slot closed")
                with contextlib.suppress(Exception):
                    await asyncio.shield(worker.exited)
            self._provider.close_slot(slot.worker_id, slot.gpu_id)
            self._notify()

    async def _slot_loop(self, slot: _Slot) -> None:
        delay = 0.0
        while not (slot.stopping or self._closed):
            if delay > 0:
                await self._wait_backoff(slot, delay)
                if slot.stopping or self._closed:
                    return
            worker = self._provider.new_worker(self.config, slot.worker_id, slot.gpu_id)
            slot.worker = worker
            try:
                await worker.start(float(self.config.startup_timeout))
            except Exception as exc:
                if not isinstance(exc, LoadFailedError):  # a bug here must not wedge the pool
                    logger.exception("starting worker %s of %s failed", slot.worker_id, self.key)
                    worker.kill("start failed")
                    exc = LoadFailedError(500, f"Worker could not be started: {exc}")
                await worker.exited
                slot.worker = None
                self._load_failed(exc)
                delay = slot.backoff.failed()
                continue
            if self._failed:
                logger.warning("%s: a worker loaded; the crash loop is over", self.key)
            self._load_failures = 0
            self._failed = False
            slot.backoff.started()
            self._release_worker(worker)
            self._notify()
            returncode = await worker.exited
            self._idle.discard(worker)
            if slot.stopping or self._closed:
                return
            slot.worker = None
            delay = slot.backoff.failed()
            logger.warning(
                "worker %s of %s is gone (code %s); restarting in %.1f s",
                slot.worker_id,
                self.key,
                returncode,
                delay,
            )
            self._notify()

    def _load_failed(self, exc: LoadFailedError) -> None:
        self._load_failures += 1
        self.last_error = redact_paths(exc.message)
        self.last_error_status = exc.status
        logger.error(
            "worker of %s failed to load (%d in a row): %s",
            self.key,
            self._load_failures,
            exc.message,
        )
        if self._load_failures >= self._max_load_failures:
            if not self._failed:
                self._failed = True
                logger.error(
                    "%s: crash-looping after %d failed loads; retrying with backoff",
                    self.key,
                    self._load_failures,
                )
            if self.ready_count == 0:
                self._idle.fail_waiters(self._failure_error())
        self._notify()

    async def _wait_backoff(self, slot: _Slot, delay: float) -> None:
        """Sleep ``delay`` (the injected sleep), or less when ``scale`` asks for a retry."""
        wake = asyncio.get_running_loop().create_future()
        slot.wake = wake
        sleeping = asyncio.ensure_future(self._sleep(delay))
        try:
            await asyncio.wait({sleeping, wake}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            slot.wake = None
            sleeping.cancel()
            wake.cancel()

    def _failure_message(self) -> str:
        return self.last_error or f"Workers of {self.key} could not load the model"

    def _failure_error(self) -> ModelLoadFailed:
        return ModelLoadFailed(self._failure_message())

    # ---- shutdown ----------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop every worker (shutdown, then SIGKILL after the grace period) and wait for it."""
        if self._closed:
            return
        self._closed = True
        self._idle.fail_waiters(ServiceUnavailable(f"Workers of {self.key} are shut down"))
        tasks = list(self._retired)
        for slot in self._slots:
            slot.stopping = True
            worker = slot.worker
            if worker is not None and worker.status is WorkerStatus.READY:
                self._stop_worker(worker)
            elif slot.task is not None:
                slot.task.cancel()
            if slot.task is not None:
                tasks.append(slot.task)
        self._slots = []
        self._notify()
        tasks.extend(self._retired)
        await asyncio.gather(*tasks, return_exceptions=True)
        self._provider.forget_pool(self.key)

    def _change_future(self) -> asyncio.Future[None]:
        if self._changed is None:
            self._changed = asyncio.get_running_loop().create_future()
        return self._changed

    def _notify(self) -> None:
        # Wake everyone waiting for a state change (scale(wait=True)); the next waiter gets a
        # fresh future.
        changed, self._changed = self._changed, None
        if changed is not None and not changed.done():
            changed.set_result(None)
