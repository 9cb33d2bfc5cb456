"""Registered versions as the data plane reports them: ``ModelStatus`` for describe,
``ModelPage`` for the model list, and the snapshot's ``models`` map.

These are protocol-neutral values (``torchwick.server.contracts``); TorchServe's describe and
list JSON is rendered from them by the REST management adapter (``api/rest_render.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from torchwick.server.contracts import ModelPage, ModelRef, ModelStatus, WorkerRow
from torchwick.server.observability.gpu_workers import (
    WorkerGpuMemory,
    shared_worker_gpu_memory,
)
from torchwick.server.scheduling import AnyManagedPool, WorkerView

from .registry import ModelRegistry, ModelVersionEntry

LIST_LIMIT_MAX = 100
CRASH_LOOPING = "CRASH_LOOPING"


def pool_state(pool: AnyManagedPool) -> str:
    """``CRASH_LOOPING`` (its last loads failed in a row; it keeps retrying with backoff),
    ``STOPPED`` (0 workers asked for), ``READY`` (all asked-for workers loaded) or
    ``SCALING`` (on the way there)."""
    if pool.failed:
        return CRASH_LOOPING
    if pool.target <= 0:
        return "STOPPED"
    return "READY" if pool.ready_count >= pool.target else "SCALING"


def _int(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _start_time(value: object) -> datetime | float | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def worker_rows(
    workers: Sequence[WorkerView], gpu: WorkerGpuMemory | None = None
) -> tuple[WorkerRow, ...]:
    """The pool's workers as typed rows (loose pool values converted once, here).

    GPU usage and per-process GPU memory come from ``gpu`` (the shared NVML reader when not
    given); without NVML they stay ``None``.
    """
    rows = []
    snapshot = None
    for worker in workers:
        pid = _int(worker.pid, -1) if worker.pid is not None else None
        gpu_id = worker.gpu_id if isinstance(worker.gpu_id, int) else None
        if snapshot is None and pid is not None:
            snapshot = (gpu or shared_worker_gpu_memory()).snapshot()
        rows.append(
            WorkerRow(
                id=str(worker.id),
                pid=pid,
                status=str(worker.status),
                start_time=_start_time(worker.start_time),
                gpu_id=gpu_id,
                memory_bytes=_int(worker.memory_bytes, 0),
                gpu_usage=(
                    snapshot.devices.get(gpu_id)
                    if snapshot is not None and gpu_id is not None
                    else None
                ),
                gpu_memory_bytes=snapshot.process_bytes(pid) if snapshot is not None else None,
            )
        )
    return tuple(rows)


def model_status(
    entry: ModelVersionEntry,
    *,
    is_default: bool,
    customized: Mapping[str, Any] | None = None,
    gpu: WorkerGpuMemory | None = None,
) -> ModelStatus:
    """The status of one registered version (``customized`` from the handler, if asked;
    GPU figures from ``gpu``, see ``worker_rows``)."""
    spec = entry.spec
    pool = entry.pool
    workers = worker_rows(pool.describe(), gpu)
    device_type = spec.device_type
    if device_type not in ("cpu", "gpu"):
        device_type = "gpu" if any(w.gpu_id is not None for w in workers) else "cpu"
    return ModelStatus(
        name=spec.name,
        version=spec.version,
        url=spec.url,
        runtime=spec.runtime,
        is_default=is_default,
        min_workers=spec.min_workers,
        max_workers=spec.max_workers,
        batch_size=spec.batch_size,
        max_batch_delay_ms=spec.max_batch_delay,
        response_timeout_s=spec.response_timeout,
        startup_timeout_s=spec.startup_timeout,
        parallel_type=spec.parallel_type,
        parallel_level=spec.parallel_level,
        device_type=device_type,
        device_ids=tuple(spec.device_ids) if spec.device_ids else None,
        loaded_at_startup=spec.loaded_at_startup,
        workers=workers,
        queue_pending=entry.batcher.pending,
        queue_capacity=entry.batcher.capacity,
        state=pool_state(pool),
        last_error=pool.last_error,
        customized=customized,
    )


def clamp_page(limit: int, next_page_token: int) -> tuple[int, int]:
    """TorchServe's paging rules: ``limit`` outside 0..100 becomes 100; a negative offset 0."""
    if limit < 0 or limit > LIST_LIMIT_MAX:
        limit = LIST_LIMIT_MAX
    return limit, max(0, next_page_token)


def list_page(defaults: Sequence[ModelVersionEntry], limit: int, offset: int) -> ModelPage:
    """A page of the model list over the default versions (already sorted by name).

    ``next_offset`` is set iff ``offset + limit <= total``: TorchServe offers a next page even
    when this one ends exactly at the last model (its quirk, kept for compatibility).
    """
    limit, offset = clamp_page(limit, offset)
    page = defaults[offset : offset + limit]
    models = tuple(ModelRef(e.spec.name, e.spec.url) for e in page)
    nxt = offset + limit if offset + limit <= len(defaults) else None
    return ModelPage(models, nxt)


def snapshot_models(
    registry: ModelRegistry,
    traffic: Callable[[str], Mapping[str, Any] | None] | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Every registered version in the ``models=`` / ``model_snapshot`` JSON shape.

    ``traffic(name)`` gives a model's traffic policy body (or ``None``); it is written as
    ``"traffic"`` on the default version's entry, where ``models=`` reads it back.
    """
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for entry in registry.entries():
        spec = entry.spec
        is_default = registry.model(spec.name).default_version == spec.version
        out.setdefault(spec.name, {})[spec.version] = {
            "defaultVersion": is_default,
            "marName": spec.mar_name or spec.url,
            "minWorkers": spec.min_workers,
            "maxWorkers": spec.max_workers,
            "batchSize": spec.batch_size,
            "maxBatchDelay": spec.max_batch_delay,
            "responseTimeout": spec.response_timeout,
            "startupTimeout": spec.startup_timeout,
            "runtimeType": spec.runtime,
        }
        policy = traffic(spec.name) if traffic is not None and is_default else None
        if policy is not None:
            out[spec.name][spec.version]["traffic"] = dict(policy)
    return out
