"""Per-model-version job queues and dynamic batching (see ``batcher`` for the policy)."""

from .batcher import Batcher
from .pool import (
    AnyBatchPool,
    AnyManagedPool,
    BatchPool,
    IntermediateSink,
    ManagedPool,
    WorkerView,
)
from .reporting import BatcherStats, BatchObserver, BatchTracer, no_worker_message

__all__ = [
    "AnyBatchPool",
    "AnyManagedPool",
    "BatchObserver",
    "BatchPool",
    "BatchTracer",
    "Batcher",
    "BatcherStats",
    "IntermediateSink",
    "ManagedPool",
    "WorkerView",
    "no_worker_message",
]
