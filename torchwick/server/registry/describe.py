"""The JSON of describe (``GET /models/{m}[/{v}|/all]``), list (``GET /models``) and the
snapshot's ``models`` map.

Field names, order and constant values follow TorchServe 0.12's describe response; fields
TorchServe leaves out when null are left out here too. torchwick appends ``state`` (and
``lastError`` when the pool reported one) after TorchServe's fields, so clients that read
TorchServe's keys see no difference.

One deliberate difference: ``startTime`` is UTC (TorchServe prints local time with a ``Z``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from torchwick.server.scheduling import AnyManagedPool, WorkerView

from .registry import ModelRegistry, ModelVersionEntry

#: TorchServe's fixed values for features torchwick does not have (no retry limit knob,
#: no client timeouts, no sequence batching, no per-model venvs).
MAX_RETRY_TIMEOUT_S = 300
LIST_LIMIT_MAX = 100


def pool_state(pool: AnyManagedPool) -> str:
    """``FAILED`` (gave up starting workers), ``STOPPED`` (0 workers asked for), ``READY``
    (all asked-for workers loaded) or ``SCALING`` (on the way there)."""
    if pool.failed:
        return "FAILED"
    if pool.target <= 0:
        return "STOPPED"
    return "READY" if pool.ready_count >= pool.target else "SCALING"


def format_start_time(value: object) -> str:
    """``yyyy-MM-dd'T'HH:mm:ss.SSS'Z'`` in UTC from epoch seconds or a datetime."""
    if isinstance(value, datetime):
        moment = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        moment = datetime.fromtimestamp(float(value), tz=UTC)
    else:
        return str(value) if value is not None else ""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _int(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def describe_workers(workers: Sequence[WorkerView]) -> list[dict[str, Any]]:
    """TorchServe's per-worker objects."""
    return [
        {
            "id": str(worker.id),
            "startTime": format_start_time(worker.start_time),
            "status": str(worker.status),
            "memoryUsage": _int(worker.memory_bytes, 0),
            "pid": _int(worker.pid, -1),
            "gpu": worker.gpu_id is not None,
            "gpuUsage": "N/A",
        }
        for worker in workers
    ]


def describe_entry(
    entry: ModelVersionEntry, *, customized: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One element of the describe array for ``entry`` (``customized`` from the handler)."""
    spec = entry.spec
    pool = entry.pool
    workers = pool.describe()
    device_type = spec.device_type
    if device_type not in ("cpu", "gpu"):
        device_type = "gpu" if any(w.gpu_id is not None for w in workers) else "cpu"
    out: dict[str, Any] = {
        "modelName": spec.name,
        "modelVersion": spec.version,
        "modelUrl": spec.url,
        "runtime": spec.runtime,
        "minWorkers": spec.min_workers,
        "maxWorkers": spec.max_workers,
        "batchSize": spec.batch_size,
        "maxBatchDelay": spec.max_batch_delay,
        "responseTimeout": spec.response_timeout,
        "startupTimeout": spec.startup_timeout,
        "maxRetryTimeoutInSec": MAX_RETRY_TIMEOUT_S,
        "clientTimeoutInMills": 0,
        "parallelType": spec.parallel_type,
        "parallelLevel": spec.parallel_level,
        "deviceType": device_type,
    }
    if spec.device_ids:
        out["deviceIds"] = list(spec.device_ids)
    out.update(
        {
            "continuousBatching": False,
            "useJobTicket": False,
            "useVenv": False,
            "stateful": False,
            "sequenceMaxIdleMSec": 0,
            "sequenceTimeoutMSec": 0,
            "maxNumSequence": 0,
            "maxSequenceJobQueueSize": 0,
            "loadedAtStartup": spec.loaded_at_startup,
            "workers": describe_workers(workers),
            "jobQueueStatus": {
                "remainingCapacity": max(0, entry.batcher.capacity - entry.batcher.pending),
                "pendingRequests": entry.batcher.pending,
            },
        }
    )
    if customized is not None:
        out["customizedMetadata"] = customized
    out["state"] = pool_state(pool)
    if pool.last_error is not None:
        out["lastError"] = pool.last_error
    return out


def clamp_page(limit: int, next_page_token: int) -> tuple[int, int]:
    """TorchServe's paging rules: ``limit`` outside 0..100 becomes 100; a negative offset 0."""
    if limit < 0 or limit > LIST_LIMIT_MAX:
        limit = LIST_LIMIT_MAX
    return limit, max(0, next_page_token)


def list_page(
    defaults: Sequence[ModelVersionEntry], limit: int, next_page_token: int
) -> dict[str, Any]:
    """A page of ``GET /models`` over the default versions (already sorted by name).

    ``nextPageToken`` is present iff ``offset + limit <= total``; TorchServe includes it even
    when the page ends exactly at the last model (its quirk, kept for compatibility).
    """
    limit, offset = clamp_page(limit, next_page_token)
    page = defaults[offset : offset + limit]
    models = [{"modelName": e.spec.name, "modelUrl": e.spec.url} for e in page]
    if offset + limit <= len(defaults):
        return {"nextPageToken": str(offset + limit), "models": models}
    return {"models": models}


def snapshot_models(registry: ModelRegistry) -> dict[str, dict[str, dict[str, Any]]]:
    """Every registered version in the ``models=`` / ``model_snapshot`` JSON shape."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for entry in registry.entries():
        spec = entry.spec
        out.setdefault(spec.name, {})[spec.version] = {
            "defaultVersion": registry.model(spec.name).default_version == spec.version,
            "marName": spec.mar_name or spec.url,
            "minWorkers": spec.min_workers,
            "maxWorkers": spec.max_workers,
            "batchSize": spec.batch_size,
            "maxBatchDelay": spec.max_batch_delay,
            "responseTimeout": spec.response_timeout,
            "startupTimeout": spec.startup_timeout,
            "runtimeType": spec.runtime,
        }
    return out
