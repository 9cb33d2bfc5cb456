"""What a worker pool needs from the owner of all workers, as a protocol.

``WorkerSupervisor`` owns the pools and implements this; ``WorkerPool`` depends only on the
protocol, so neither module imports the other's module in a circle (the supervisor imports the
pool, the pool imports this).
"""

from __future__ import annotations

from typing import Protocol

from torchwick.server.model_version import ModelVersionConfig

from .process import WorkerProcess


class SlotProvider(Protocol):
    """What a pool needs from the server-wide owner of workers (``WorkerSupervisor``)."""

    def open_slot(self, config: ModelVersionConfig, owner: str) -> tuple[int, int | None]:
        """A fresh worker id and the slot's GPU (``None`` for CPU); pair with ``close_slot``."""
        ...

    def close_slot(self, worker_id: int, gpu_id: int | None) -> None:
        """Give back a slot's GPU and its share of the thread budget."""
        ...

    def new_worker(
        self, config: ModelVersionConfig, worker_id: int, gpu_id: int | None
    ) -> WorkerProcess:
        """A not yet started worker process for slot ``worker_id`` (its LOAD frame included)."""
        ...

    def forget_pool(self, key: str) -> None:
        """Called once by a pool that finished closing."""
        ...
