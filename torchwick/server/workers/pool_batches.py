"""Leasing and batches for ``WorkerPool``: the per-request half of a pool (``PoolBatches``).

A lease reserves one idle, loaded worker for one batch; ``run_batch`` sends the batch and
gives the worker back (at once for a pipelined worker with room for another batch, see
``ModelVersionConfig.pipeline_depth``). Split from ``pool`` so the slot life cycle (start,
restart with backoff, crash loop, scale) and the hot path read apart; the mixin uses only
the pool state declared below.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from torchwick.handlers.messages import PredictRequest, PredictResponse
from torchwick.server.errors import ModelLoadFailed, ServiceUnavailable
from torchwick.server.model_version import ModelVersionConfig

from .channel import IntermediateHandler
from .ipc import Kind
from .leasing import IdleWorkers, WorkerLease
from .process import WorkerProcess

if TYPE_CHECKING:
    from collections.abc import Sized


class PoolBatches(ABC):
    """``acquire``/``release`` and ``run_batch``/``run_describe`` of a ``WorkerPool``
    (which provides the state and the three methods declared abstract here)."""

    key: str
    config: ModelVersionConfig
    _idle: IdleWorkers
    _closed: bool
    _failed: bool
    _slots: Sized

    @property
    @abstractmethod
    def ready_count(self) -> int:
        """Loaded workers."""

    @abstractmethod
    def _failure_error(self) -> ModelLoadFailed:
        """The error a crash-looping pool answers with."""

    @abstractmethod
    def _stop_worker(self, worker: WorkerProcess) -> None:
        """Stop ``worker`` (shutdown, then SIGKILL after the grace period)."""

    # ---- leasing -----------------------------------------------------------------------------

    def try_acquire(self) -> WorkerLease | None:
        """An idle worker reserved for one batch, or ``None`` at once if none is idle."""
        worker = self._idle.take()
        return None if worker is None else WorkerLease(worker)

    async def acquire(self) -> WorkerLease:
        """Wait for an idle, loaded worker and reserve it for one batch.

        Raises ``ModelLoadFailed`` when the pool failed and has no ready worker,
        ``ServiceUnavailable`` when it is closed or has a target of 0. Cancel-safe.
        """
        while True:
            worker = self._idle.take()
            if worker is not None:
                return WorkerLease(worker)
            if self._closed or not self._slots:
                raise ServiceUnavailable(f"Model {self.key} has no worker to serve the request")
            if self._failed and self.ready_count == 0:
                raise self._failure_error()
            worker = await self._idle.wait()
            if worker.usable:
                return WorkerLease(worker)
            worker.leased = False  # died between hand-over and wake-up: wait again

    def release(self, lease: WorkerLease) -> None:
        """Give back a lease that will not run a batch."""
        self._release_worker(lease.take())

    def _release_worker(self, worker: WorkerProcess) -> None:
        worker.leased = False
        if worker.retiring or self._closed:
            self._stop_worker(worker)
        elif worker.usable:
            self._idle.give(worker)
        # else: dying; its slot replaces it

    # ---- batches -----------------------------------------------------------------------------

    async def run_batch(
        self,
        lease: WorkerLease,
        batch: list[PredictRequest],
        on_intermediate: IntermediateHandler | None = None,
    ) -> list[PredictResponse]:
        """Run ``batch`` on the leased worker; one final response per request, in order.

        Releases the lease: after the answer, or, with the config's ``pipeline_depth`` above
        1, as soon as the batch is sent while the worker holds fewer batches than that.
        Raises ``WorkerDied`` (the worker died; it is replaced),
        ``ResponseTimeout`` (no answer within the config's ``response_timeout``; the worker is
        killed and replaced) or ``InternalError`` (an answer above ``max_response_size``).
        """
        worker = lease.take()
        depth = self.config.pipeline_depth
        worker.in_flight += 1
        holds_lease = True

        def sent() -> None:
            # A pipelined worker takes its next batch while this one runs: back to the idle
            # set at once while it has room, else held until one of its batches is answered.
            nonlocal holds_lease
            holds_lease = False
            if worker.in_flight < depth and worker.usable and not self._closed:
                self._idle.give(worker)
            else:
                worker.held_full = True

        try:
            return await worker.predict(
                batch,
                on_intermediate,
                float(self.config.response_timeout),
                on_sent=sent if depth > 1 else None,
            )
        finally:
            worker.in_flight -= 1
            if holds_lease:
                self._release_worker(worker)
            elif worker.held_full:
                worker.held_full = False
                self._release_worker(worker)

    async def run_describe(self, lease: WorkerLease, request: PredictRequest) -> PredictResponse:
        """The handler's describe answer for ``?customized=true``; errors as ``run_batch``."""
        worker = lease.take()
        try:
            responses = await worker.predict(
                [request], None, float(self.config.response_timeout), kind=Kind.DESCRIBE
            )
            return responses[0]
        finally:
            self._release_worker(worker)
