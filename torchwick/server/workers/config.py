"""Values the worker layer reports to its callers: worker states and describe rows.

A pool is configured by the version's ``torchwick.server.model_version.ModelVersionConfig``
(there is no separate pool configuration type); supervision policy that is not per model
(backoff, load failures before giving up, stop grace) is set on ``WorkerSupervisor``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


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
