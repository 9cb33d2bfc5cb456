"""Values the worker layer exchanges with its callers: pool configuration and describe rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from torchwick.handlers.messages import LoadSpec


class WorkerStatus(StrEnum):
    """A worker's state as describe shows it.

    ``LOADING``: the process is starting or loading the model. ``READY``: loaded, idle or
    serving. ``UNLOADING``: being stopped. ``FAILED``: its last start failed or it died, and it is
    waiting to be restarted (or, in a failed pool, will not be).
    """

    LOADING = "LOADING"
    READY = "READY"
    UNLOADING = "UNLOADING"
    FAILED = "FAILED"


@dataclass(frozen=True, slots=True)
class WorkerPoolConfig:
    """How one model version's workers are started and supervised.

    ``load_spec.gpu_id`` is ignored: the supervisor assigns a GPU per worker. ``device_type``
    is ``auto`` (GPU when one is visible), ``cpu`` or ``gpu`` (falls back to CPU, with a
    warning, when none is visible). ``device_ids`` restricts GPU workers to those ids; ids that
    are not visible are dropped. A pool gives up after ``max_load_failures`` consecutive failed
    loads. Stopping a worker waits ``stop_grace_s`` for it to exit before killing it.
    """

    load_spec: LoadSpec
    device_type: str = "auto"
    device_ids: tuple[int, ...] | None = None
    response_timeout_s: float = 120.0
    startup_timeout_s: float = 120.0
    max_response_size: int = 6553500
    max_load_failures: int = 5
    stop_grace_s: float = 5.0


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One row of describe's ``workers``.

    ``id`` is stable across restarts of the same worker slot ("9000", "9001", ...). ``pid`` is
    ``None`` while no process runs. ``start_time`` is when the current (or last) process was
    started, in UTC. ``memory_bytes`` is the process's resident set size (0 when not running).
    """

    id: str
    pid: int | None
    status: WorkerStatus
    start_time: datetime
    gpu_id: int | None
    memory_bytes: int
