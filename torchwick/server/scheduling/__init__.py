"""Per-model-version job queues and dynamic batching (see ``batcher`` for the policy)."""

from .batcher import Batcher, BatcherStats, no_worker_message
from .pool import (
    AnyBatchPool,
    AnyManagedPool,
    BatchPool,
    IntermediateSink,
    ManagedPool,
    WorkerView,
)

__all__ = [
    "AnyBatchPool",
    "AnyManagedPool",
    "BatchPool",
    "Batcher",
    "BatcherStats",
    "IntermediateSink",
    "ManagedPool",
    "WorkerView",
    "no_worker_message",
]
