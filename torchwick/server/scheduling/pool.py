"""The slice of a worker pool that scheduling and the data plane depend on.

The real pool lives in ``torchwick.server.workers``; these protocols name only the members
this package calls, so the batcher can be driven by a fake pool in unit tests and so that a
change inside the workers package cannot silently widen what the scheduler relies on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from torchwick.handlers.messages import PredictRequest, PredictResponse

LeaseT = TypeVar("LeaseT")

#: Called with each intermediate (streamed) response of a batch, in the order they arrive.
IntermediateSink = Callable[[PredictResponse], None]


class BatchPool(Protocol[LeaseT]):
    """What the batcher needs: hand out idle workers and run one batch on one of them.

    ``acquire`` waits until a loaded worker is idle. ``run_batch`` returns exactly one final
    response per request, in order, releases the lease, and raises ``WorkerDied`` or
    ``ResponseTimeout`` when the worker fails while running the batch.
    """

    @property
    def target(self) -> int:
        """Workers the pool is asked to run; 0 means the version takes no requests."""
        ...

    @property
    def ready_count(self) -> int:
        """Workers loaded and able to take a batch (busy or idle)."""
        ...

    @property
    def failed(self) -> bool:
        """True when the pool gave up starting workers (the last error says why)."""
        ...

    async def acquire(self) -> LeaseT:
        """Wait for an idle, loaded worker and reserve it for one batch."""
        ...

    def release(self, lease: LeaseT) -> None:
        """Give back a lease that will not run a batch."""
        ...

    async def run_batch(
        self,
        lease: LeaseT,
        batch: list[PredictRequest],
        on_intermediate: IntermediateSink | None = None,
    ) -> list[PredictResponse]:
        """Run ``batch`` on the leased worker; one final response per request, in order."""
        ...


#: The pool type the batcher stores: the lease is opaque to it.
AnyBatchPool = BatchPool[Any]


class WorkerView(Protocol):
    """One worker as ``WorkerPool.describe`` reports it (types kept loose on purpose: the
    describe formatter converts each value)."""

    @property
    def id(self) -> object: ...
    @property
    def pid(self) -> object: ...
    @property
    def status(self) -> object: ...
    @property
    def start_time(self) -> object: ...
    @property
    def gpu_id(self) -> object: ...
    @property
    def memory_bytes(self) -> object: ...


class ManagedPool(BatchPool[LeaseT], Protocol[LeaseT]):
    """The whole pool contract the data plane uses: batching plus scaling and reporting."""

    @property
    def last_error(self) -> str | None:
        """Why the last worker failed to start or died, if it did."""
        ...

    async def run_describe(self, lease: LeaseT, request: PredictRequest) -> PredictResponse:
        """The handler's describe answer (``?customized=true``) on the leased worker."""
        ...

    async def scale(self, target: int, *, wait: bool) -> int:
        """Set the worker target; with ``wait`` return once they are up (``ModelLoadFailed``
        when none could load). Returns the workers running after the call."""
        ...

    def describe(self) -> Sequence[WorkerView]:
        """The pool's workers, for describe."""
        ...

    async def close(self) -> None:
        """Stop every worker of the pool."""
        ...


#: The pool type the data plane stores.
AnyManagedPool = ManagedPool[Any]
