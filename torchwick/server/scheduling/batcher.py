"""One bounded job queue per model version and the loop that turns it into batches.

Batch formation never waits on a timer. The dispatcher takes everything already queued (up
to ``batch_size``) the moment a worker is idle; while every worker is busy, requests simply
accumulate, so batches grow with load and stay at 1 when requests arrive one at a time.
``max_batch_delay`` is therefore not a waiting time in torchwick: it is kept, shown and
snapshotted for TorchServe compatibility only (see docs/internal-contracts.md, "data plane").

Every request owns a future. A batch resolves each future on its own; a worker failure fails
only the futures of the batch it was running. A request whose caller was cancelled while it
was still queued (client gone) is dropped when the next batch is formed and never runs.

The per-request path is a capacity check, one future, one deque append and at most one wakeup:
no logging, no validation models, no extra task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from torchwick.handlers.messages import PredictRequest, PredictResponse
from torchwick.server.errors import (
    InternalError,
    QueueFull,
    ResponseTimeout,
    ServiceUnavailable,
    TorchwickError,
)

from .pool import AnyBatchPool, IntermediateSink
from .reporting import BatcherStats, BatchObserver, BatchTracer

logger = logging.getLogger(__name__)

# Job states. A job cancelled while queued stays in the deque (removing it from the middle
# would cost O(n)) and is counted as a "ghost" so it does not use up queue capacity.
_QUEUED: Final = 0
_GHOST: Final = 1
_TAKEN: Final = 2

#: Rebuild the deque once this many ghosts make up more than half of it.
_COMPACT_AT: Final = 64


class _Job:
    """One queued request: its future, optional stream sink, enqueue time and state, and its
    trace (None unless tracing is on)."""

    __slots__ = ("enqueued_at", "formed_at", "future", "request", "sink", "state", "trace")

    def __init__(
        self,
        request: PredictRequest,
        future: asyncio.Future[PredictResponse],
        sink: IntermediateSink | None,
        enqueued_at: float,
        trace: Any = None,
    ) -> None:
        self.request = request
        self.future = future
        self.sink = sink
        self.enqueued_at = enqueued_at
        self.state = _QUEUED
        self.trace = trace
        self.formed_at = 0.0


class Batcher:
    """Queue and dispatcher of one model version.

    ``capacity`` bounds the requests waiting (not running); a full queue answers ``QueueFull``
    (503, "queue full"), a pool with a target of 0 workers or a crash-looping pool with no
    ready worker answers ``ServiceUnavailable``, at once. A request still queued
    ``queue_timeout_s`` after it arrived (the model's ``response_timeout``: its client's
    answer is already overdue) is answered ``ResponseTimeout`` (504) when its batch would
    form, and never runs.
    Call ``start`` on the event loop before ``infer``; ``stop`` then ``drain`` to shut down.
    """

    def __init__(
        self,
        pool: AnyBatchPool,
        *,
        batch_size: int,
        capacity: int,
        unavailable_message: str,
        clock: Callable[[], float] = time.monotonic,
        queue_timeout_s: float | None = None,
        queue_full_message: str | None = None,
    ) -> None:
        if batch_size < 1 or capacity < 1:
            raise ValueError("batch_size and capacity must be at least 1")
        self._pool = pool
        self._batch_size = batch_size
        self._capacity = capacity
        self._message = unavailable_message
        self._queue_timeout = queue_timeout_s
        self._full_message = queue_full_message or (
            f"Job queue full ({capacity} requests waiting); retry later"
        )
        self._expired = 0
        self._clock = clock
        self._queue: deque[_Job] = deque()
        self._ghosts = 0
        self._wakeup: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._closed: TorchwickError | None = None
        self._requests = 0
        self._batches = 0
        self._rejected = 0
        self._dropped = 0
        self._queue_time = 0.0
        #: Set by the data plane when metrics are on; read once per batch, never per request.
        self.observer: BatchObserver | None = None
        #: Set by the data plane when tracing is on.
        self.tracer: BatchTracer | None = None

    # ----------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start the dispatch loop on the running event loop (idempotent)."""
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._task = self._loop.create_task(self._dispatch(), name="torchwick-batcher")

    def stop(self, error: TorchwickError) -> None:
        """Refuse new requests with ``error``, fail the queued ones with it, stop dispatching.

        Batches already running keep going; ``drain`` waits for them.
        """
        self._closed = error
        self.fail_pending(error)
        if self._task is not None:
            self._task.cancel()

    async def drain(self, timeout: float | None) -> bool:
        """Wait for the dispatch loop to end and running batches to finish; False on timeout."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if not self._inflight:
            return True
        _, pending = await asyncio.wait(set(self._inflight), timeout=timeout)
        return not pending

    def fail_pending(self, error: TorchwickError) -> int:
        """Fail every queued (not yet running) request with ``error``; returns how many."""
        failed = 0
        queue = self._queue
        while queue:
            job = queue.popleft()
            job.state = _TAKEN
            if not job.future.done():
                job.future.set_exception(error)
                failed += 1
        self._ghosts = 0
        return failed

    # ------------------------------------------------------------------------------ queries
    @property
    def batch_size(self) -> int:
        """Largest batch this version's workers are given."""
        return self._batch_size

    @property
    def capacity(self) -> int:
        """Queue bound (``jobQueueSize``)."""
        return self._capacity

    @property
    def pending(self) -> int:
        """Requests queued and still wanted (not running yet)."""
        return len(self._queue) - self._ghosts

    @property
    def running_batches(self) -> int:
        """Batches handed to workers and not finished."""
        return len(self._inflight)

    def stats(self) -> BatcherStats:
        """A snapshot of the counters."""
        return BatcherStats(
            requests=self._requests,
            batches=self._batches,
            rejected=self._rejected,
            dropped=self._dropped,
            pending=self.pending,
            queue_time_s=self._queue_time,
            expired=self._expired,
            crash_looping=self._pool.failed,
        )

    # ----------------------------------------------------------------------------- hot path
    async def infer(
        self,
        request: PredictRequest,
        on_intermediate: IntermediateSink | None = None,
        trace: Any = None,
    ) -> PredictResponse:
        """Queue ``request`` and wait for its final response.

        Raises ``QueueFull`` when the queue is full, ``ServiceUnavailable`` when no worker can
        serve, ``ResponseTimeout`` when it waited in the queue past ``queue_timeout_s``, and
        whatever the worker raised for its batch (``WorkerDied``, ``ResponseTimeout``).
        Cancelling the caller while the request is queued drops it before it runs.
        """
        if self._closed is not None:
            raise self._closed
        queue = self._queue
        pool = self._pool
        if len(queue) - self._ghosts >= self._capacity:
            self._rejected += 1
            raise QueueFull(self._full_message)
        if pool.target <= 0 or (pool.failed and pool.ready_count <= 0):
            self._rejected += 1
            raise ServiceUnavailable(self._message)
        loop = self._loop
        if loop is None:
            raise RuntimeError("Batcher.start() was not called")
        job = _Job(request, loop.create_future(), on_intermediate, self._clock(), trace)
        queue.append(job)
        waiter = self._wakeup
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        try:
            return await job.future
        except asyncio.CancelledError:
            if job.state == _QUEUED:
                job.state = _GHOST
                self._ghosts += 1
                if self._ghosts > _COMPACT_AT and self._ghosts * 2 > len(queue):
                    self._compact()
            raise

    def _compact(self) -> None:
        """Drop cancelled jobs from the deque so it cannot grow without bound."""
        kept: deque[_Job] = deque()
        for job in self._queue:
            if job.future.done():
                job.state = _TAKEN
                self._dropped += 1
            else:
                kept.append(job)
        self._queue = kept
        self._ghosts = 0

    def _take(self) -> list[_Job]:
        """Pop up to ``batch_size`` wanted jobs; cancelled ones are dropped on the way."""
        queue = self._queue
        limit = self._batch_size
        batch: list[_Job] = []
        now = self._clock()
        waited = 0.0
        expiry = self._queue_timeout
        observer = self.observer
        while queue and len(batch) < limit:
            job = queue.popleft()
            if job.future.done():
                if job.state == _GHOST:
                    self._ghosts -= 1
                job.state = _TAKEN
                self._dropped += 1
                continue
            job.state = _TAKEN
            if expiry is not None and now - job.enqueued_at > expiry:
                self._expired += 1
                job.future.set_exception(
                    ResponseTimeout(
                        f"Request waited in the queue longer than the response timeout "
                        f"({expiry:g} s); it was not run"
                    )
                )
                continue
            job.formed_at = now
            wait = now - job.enqueued_at
            waited += wait
            if observer is not None:
                observer.queue_wait(wait)
            batch.append(job)
        if batch:
            self._requests += len(batch)
            self._batches += 1
            self._queue_time += waited
            if observer is not None:
                observer.batch_formed(len(batch), limit, now - batch[0].enqueued_at)
        return batch

    async def _dispatch(self) -> None:
        """Wait for work, then for an idle worker, then send everything queued as one batch.

        Waiting for work before acquiring keeps idle workers unreserved (scale-down and
        crash replacement see them as idle). If every queued request was cancelled while the
        worker was being acquired, the lease goes straight back to the pool.
        """
        loop = asyncio.get_running_loop()
        pool = self._pool
        while True:
            if len(self._queue) - self._ghosts <= 0:
                if self._queue:
                    self._compact()
                waiter: asyncio.Future[None] = loop.create_future()
                self._wakeup = waiter
                try:
                    await waiter
                finally:
                    self._wakeup = None
                continue
            try:
                lease = await pool.acquire()
            except TorchwickError as error:
                self.fail_pending(error)
                continue
            except Exception as error:  # a pool bug must not strand queued requests
                logger.exception("worker pool failed to hand out a worker")
                self.fail_pending(InternalError(f"Worker pool error: {error}"))
                continue
            batch = self._take()
            if not batch:
                pool.release(lease)
                continue
            task = loop.create_task(self._execute(lease, batch))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _execute(self, lease: Any, batch: list[_Job]) -> None:
        """Run one batch and resolve each of its futures on its own."""
        requests = [job.request for job in batch]
        sink: IntermediateSink | None = None
        for job in batch:
            if job.sink is not None:
                sink = _stream_router(batch)
                break
        sent_at = self._clock()
        try:
            responses = await self._pool.run_batch(lease, requests, sink)
            tracer = self.tracer
            if tracer is not None:
                # Synchronous with run_batch's return: last_timings is this batch's.
                traced = [(j.trace, j.enqueued_at, j.formed_at) for j in batch if j.trace]
                observer = self.observer
                timings = observer.last_timings if observer is not None else None
                if traced:
                    tracer.batch(traced, sent_at, self._clock(), timings)
        except TorchwickError as error:
            _fail(batch, error)
            return
        except asyncio.CancelledError:
            _fail(batch, ServiceUnavailable(self._message))
            raise
        except Exception as error:
            logger.exception("worker pool raised an unexpected error while running a batch")
            _fail(batch, InternalError(f"Worker pool error: {error}"))
            return
        if len(responses) != len(batch):
            _fail(batch, InternalError("number of batch response mismatched"))
            return
        for job, response in zip(batch, responses, strict=True):
            future = job.future
            if not future.done():
                future.set_result(response)


def _fail(batch: list[_Job], error: BaseException) -> None:
    for job in batch:
        if not job.future.done():
            job.future.set_exception(error)


def _stream_router(batch: list[_Job]) -> IntermediateSink:
    """One sink for the worker that forwards each chunk to the sink of its own request."""
    sinks = {job.request.request_id: job for job in batch if job.sink is not None}

    def route(response: PredictResponse) -> None:
        job = sinks.get(response.request_id)
        if job is not None and job.sink is not None and not job.future.done():
            job.sink(response)

    return route
