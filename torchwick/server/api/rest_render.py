"""TorchServe's JSON for the management API, rendered from the data plane's typed values.

Field names, order and constant values follow TorchServe 0.12's describe and list responses;
fields TorchServe leaves out when null are left out here too. torchwick appends ``state`` (and
``lastError`` when the pool reported one) after TorchServe's fields, and ``gpuMemoryUsage``
after a worker's fields when NVML lists its process, so clients that read TorchServe's keys
see no difference.

One deliberate difference: ``startTime`` is UTC (TorchServe prints local time with a ``Z``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from torchwick.server.contracts import GpuUsage, ModelPage, ModelStatus, Outcome, WorkerRow

#: TorchServe's fixed values for features torchwick does not have (no retry limit knob,
#: no client timeouts, no sequence batching, no per-model venvs).
MAX_RETRY_TIMEOUT_S = 300

#: The HTTP status TorchServe answers for each management outcome.
OUTCOME_STATUS: dict[Outcome, int] = {
    Outcome.DONE: 200,
    Outcome.ACCEPTED: 202,
    Outcome.PARTIAL: 206,
}


def format_start_time(value: datetime | float | None) -> str:
    """``yyyy-MM-dd'T'HH:mm:ss.SSS'Z'`` in UTC from epoch seconds or a datetime."""
    if isinstance(value, datetime):
        moment = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    elif isinstance(value, int | float):
        moment = datetime.fromtimestamp(float(value), tz=UTC)
    else:
        return ""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def format_gpu_usage(usage: GpuUsage | None) -> str:
    """TorchServe 0.12's ``gpuUsage``: its worker joined the ``nvidia-smi --format=csv``
    header and values of ``utilization.gpu,utilization.memory,memory.used`` for the worker's
    GPU (device-wide figures); ``N/A`` when there is none."""
    if usage is None:
        return "N/A"
    mib = usage.memory_used_bytes // (1024 * 1024)
    return (
        f"gpuId::{usage.gpu_id} utilization.gpu [%]::{usage.utilization_gpu} %"
        f" utilization.memory [%]::{usage.utilization_memory} %"
        f" memory.used [MiB]::{mib} MiB"
    )


def render_workers(workers: Sequence[WorkerRow]) -> list[dict[str, Any]]:
    """TorchServe's per-worker objects, plus torchwick's ``gpuMemoryUsage`` (bytes of GPU
    memory the worker's process holds) when NVML lists the process."""
    out = []
    for worker in workers:
        row: dict[str, Any] = {
            "id": worker.id,
            "startTime": format_start_time(worker.start_time),
            "status": worker.status,
            "memoryUsage": worker.memory_bytes,
            "pid": -1 if worker.pid is None else worker.pid,
            "gpu": worker.gpu_id is not None,
            "gpuUsage": format_gpu_usage(worker.gpu_usage if worker.gpu_id is not None else None),
        }
        if worker.gpu_memory_bytes is not None:
            row["gpuMemoryUsage"] = worker.gpu_memory_bytes
        out.append(row)
    return out


def render_status(status: ModelStatus) -> dict[str, Any]:
    """One element of TorchServe's describe array."""
    out: dict[str, Any] = {
        "modelName": status.name,
        "modelVersion": status.version,
        "modelUrl": status.url,
        "runtime": status.runtime,
        "minWorkers": status.min_workers,
        "maxWorkers": status.max_workers,
        "batchSize": status.batch_size,
        "maxBatchDelay": status.max_batch_delay_ms,
        "responseTimeout": status.response_timeout_s,
        "startupTimeout": status.startup_timeout_s,
        "maxRetryTimeoutInSec": MAX_RETRY_TIMEOUT_S,
        "clientTimeoutInMills": 0,
        "parallelType": status.parallel_type,
        "parallelLevel": status.parallel_level,
        "deviceType": status.device_type,
    }
    if status.device_ids:
        out["deviceIds"] = list(status.device_ids)
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
            "loadedAtStartup": status.loaded_at_startup,
            "workers": render_workers(status.workers),
            "jobQueueStatus": {
                "remainingCapacity": max(0, status.queue_capacity - status.queue_pending),
                "pendingRequests": status.queue_pending,
            },
        }
    )
    if status.customized is not None:
        out["customizedMetadata"] = dict(status.customized)
    out["state"] = status.state
    if status.traffic is not None:
        out["trafficPolicy"] = dict(status.traffic)
    if status.last_error is not None:
        out["lastError"] = status.last_error
    return out


def render_page(page: ModelPage) -> dict[str, Any]:
    """TorchServe's ``GET /models`` body (``nextPageToken`` first, when there is one)."""
    models = [{"modelName": m.name, "modelUrl": m.url} for m in page.models]
    if page.next_offset is not None:
        return {"nextPageToken": str(page.next_offset), "models": models}
    return {"models": models}
