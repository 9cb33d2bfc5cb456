"""Worker processes: spawning, supervision, and the framed IPC to them.

The public surface (see ``docs/internal-contracts.md``, section *workers*) is
``WorkerSupervisor`` (one per server), ``WorkerPool`` (one per model version, configured by
its ``torchwick.server.model_version.ModelVersionConfig``), ``SlotProvider`` (what a pool needs
of the supervisor), ``WorkerLease``, ``WorkerInfo``, ``WorkerStatus``, ``BackoffPolicy`` and
``MetricSink``.

Names are imported on first use: the worker process runs ``worker_main`` from this package and
should not pay for the frontend's asyncio machinery it never uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torchwick._lazy import lazy_exports

if TYPE_CHECKING:
    from .backoff import BackoffPolicy
    from .config import WorkerInfo, WorkerStatus
    from .leasing import WorkerLease
    from .pool import WorkerPool
    from .slots import SlotProvider
    from .supervisor import MetricSink, WorkerSupervisor

_EXPORTS = {
    "BackoffPolicy": ".backoff",
    "MetricSink": ".supervisor",
    "WorkerInfo": ".config",
    "SlotProvider": ".slots",
    "WorkerLease": ".leasing",
    "WorkerPool": ".pool",
    "WorkerStatus": ".config",
    "WorkerSupervisor": ".supervisor",
}

__all__ = [
    "BackoffPolicy",
    "MetricSink",
    "SlotProvider",
    "WorkerInfo",
    "WorkerLease",
    "WorkerPool",
    "WorkerStatus",
    "WorkerSupervisor",
]


__getattr__ = lazy_exports(__name__, _EXPORTS, globals())
