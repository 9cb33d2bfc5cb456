"""Registry bookkeeping, routing, and the describe/list values rendered as TorchServe's JSON
(by the REST adapter's renderer, so the shape is pinned end to end)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from torchwick.server.api.rest_render import format_start_time, render_page, render_status
from torchwick.server.contracts import InferenceRequest
from torchwick.server.errors import (
    Conflict,
    ForbiddenOperation,
    ModelNotFound,
    ModelVersionNotFound,
)
from torchwick.server.registry import (
    ModelRegistry,
    ModelVersionConfig,
    ModelVersionEntry,
    ModelVersions,
    model_status,
)
from torchwick.server.registry import list_page as page_of
from torchwick.server.scheduling import Batcher

from ..scheduling.fake_pool import FakePool


def describe_entry(e: ModelVersionEntry, customized: Any = None) -> dict[str, Any]:
    return render_status(model_status(e, is_default=True, customized=customized))


def list_page(defaults: list[ModelVersionEntry], limit: int, offset: int) -> dict[str, Any]:
    return render_page(page_of(defaults, limit, offset))


def entry(name: str, version: str = "1.0", *, workers: int = 0) -> ModelVersionEntry:
    pool = FakePool(workers=workers)
    spec = ModelVersionConfig(
        name=name,
        version=version,
        url=f"{name}.mar",
        mar_name=f"{name}.mar",
        runtime="python",
        handler="h.py",
        min_workers=workers,
        max_workers=workers,
        batch_size=1,
        max_batch_delay=100,
        response_timeout=120,
        startup_timeout=120,
        job_queue_size=100,
        model_dir="/tmp",
    )
    batcher = Batcher(pool, batch_size=1, capacity=100, unavailable_message="none")
    return ModelVersionEntry(spec, pool, batcher)


def test_first_version_is_default_and_routing() -> None:
    registry = ModelRegistry()
    v1, v2 = entry("m", "1.0"), entry("m", "2.0")
    assert registry.add(v1) is True
    assert registry.add(v2) is False
    request = InferenceRequest("r")
    assert registry.route("m", None, request) is v1
    assert registry.route("m", "2.0", request) is v2
    assert registry.get("m") is v1


def test_lookup_errors_use_torchserve_texts() -> None:
    registry = ModelRegistry()
    registry.add(entry("m"))
    with pytest.raises(ModelNotFound, match=r"^Model not found: x$"):
        registry.route("x", None, InferenceRequest("r"))
    with pytest.raises(
        ModelVersionNotFound, match=r"^Model version: 9 does not exist for model: m$"
    ):
        registry.get("m", "9")


def test_same_name_and_version_conflicts() -> None:
    registry = ModelRegistry()
    registry.add(entry("m"))
    with pytest.raises(Conflict, match=r"Model version 1\.0 is already registered for model m"):
        registry.add(entry("m"))


def test_default_cannot_go_while_other_versions_exist() -> None:
    registry = ModelRegistry()
    v1, v2 = entry("m", "1.0"), entry("m", "2.0")
    registry.add(v1)
    registry.add(v2)
    with pytest.raises(ForbiddenOperation, match="Cannot remove default version for model m"):
        registry.remove(v1)
    registry.remove(v2)
    registry.remove(v1)
    assert "m" not in registry


def test_forced_removal_moves_the_default() -> None:
    registry = ModelRegistry()
    v1, v2 = entry("m", "1.0"), entry("m", "2.0")
    registry.add(v1)
    registry.add(v2)
    registry.remove(v1, force=True)
    assert registry.get("m") is v2


def test_set_default() -> None:
    registry = ModelRegistry()
    registry.add(entry("m", "1.0"))
    v2 = entry("m", "2.0")
    registry.add(v2)
    registry.set_default("m", "2.0")
    assert registry.get("m") is v2
    with pytest.raises(ModelVersionNotFound, match=r"^Model version 3 does not exist for model m$"):
        registry.set_default("m", "3")
    with pytest.raises(ModelNotFound):
        registry.set_default("x", "1.0")


def test_custom_router_seam() -> None:
    class Latest:
        def route(
            self, model: ModelVersions, request: InferenceRequest | None
        ) -> ModelVersionEntry:
            return list(model.versions.values())[-1]

    registry = ModelRegistry(Latest())
    registry.add(entry("m", "1.0"))
    v2 = entry("m", "2.0")
    registry.add(v2)
    assert registry.route("m", None, InferenceRequest("r")) is v2


def test_list_paging_quirks() -> None:
    registry = ModelRegistry()
    for name in ("d", "b", "a", "c"):
        registry.add(entry(name))
    registry.add(entry("a", "2.0"))  # only default versions are listed
    defaults = registry.defaults()
    assert list_page(defaults, 100, 0) == {
        "models": [{"modelName": n, "modelUrl": f"{n}.mar"} for n in "abcd"]
    }
    assert list_page(defaults, 2, 0)["nextPageToken"] == "2"
    # Present even when the page ends exactly at the last model (TorchServe's quirk).
    page = list_page(defaults, 2, 2)
    assert page["nextPageToken"] == "4"
    assert [m["modelName"] for m in page["models"]] == ["c", "d"]
    assert "nextPageToken" not in list_page(defaults, 3, 2)
    assert len(list_page(defaults, 500, -3)["models"]) == 4  # limit > 100 -> 100; offset < 0 -> 0
    assert list_page(defaults, -1, 0)["models"][0]["modelName"] == "a"


def test_describe_shape_and_order() -> None:
    e = entry("m", workers=1)
    described = describe_entry(e)
    assert list(described) == [
        "modelName",
        "modelVersion",
        "modelUrl",
        "runtime",
        "minWorkers",
        "maxWorkers",
        "batchSize",
        "maxBatchDelay",
        "responseTimeout",
        "startupTimeout",
        "maxRetryTimeoutInSec",
        "clientTimeoutInMills",
        "parallelType",
        "parallelLevel",
        "deviceType",
        "continuousBatching",
        "useJobTicket",
        "useVenv",
        "stateful",
        "sequenceMaxIdleMSec",
        "sequenceTimeoutMSec",
        "maxNumSequence",
        "maxSequenceJobQueueSize",
        "loadedAtStartup",
        "workers",
        "jobQueueStatus",
        "state",
    ]
    assert described["deviceType"] == "cpu"
    assert described["state"] == "READY"
    assert described["jobQueueStatus"] == {"remainingCapacity": 100, "pendingRequests": 0}
    worker = described["workers"][0]
    assert list(worker) == ["id", "startTime", "status", "memoryUsage", "pid", "gpu", "gpuUsage"]
    assert worker["gpu"] is False and worker["gpuUsage"] == "N/A"


def test_describe_failed_pool_shows_state_and_last_error() -> None:
    e = entry("m", workers=1)
    assert isinstance(e.pool, FakePool)
    e.pool.failed, e.pool.last_error = True, "handler import failed"
    described = describe_entry(e, customized={"k": 1})
    assert list(described)[-3:] == ["customizedMetadata", "state", "lastError"]
    assert described["state"] == "CRASH_LOOPING"
    assert described["lastError"] == "handler import failed"


def test_start_time_format() -> None:
    moment = datetime(2024, 10, 2, 13, 44, 53, 34000, tzinfo=UTC)
    assert format_start_time(moment) == "2024-10-02T13:44:53.034Z"
    assert format_start_time(moment.timestamp()) == "2024-10-02T13:44:53.034Z"
