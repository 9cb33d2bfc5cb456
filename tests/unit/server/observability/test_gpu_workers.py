"""Per-worker GPU memory in describe and /metrics, read through a fake ``pynvml`` module.

No GPU is on this machine: the fake stands in for NVML's Python binding (``nvidia-ml-py``)
with the calls and attribute names the real one has, injected through ``sys.modules``.
"""

from __future__ import annotations

import json
import logging
import sys
import types
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from torchwick.server.api.rest_render import render_status
from torchwick.server.observability import render_text
from torchwick.server.observability.gpu_workers import WorkerGpuMemory
from torchwick.server.observability.system import SystemMetrics
from torchwick.server.observability.ts_metrics import frontend_specs
from torchwick.server.registry import ModelVersionConfig, ModelVersionEntry, model_status
from torchwick.server.scheduling import Batcher

from ..scheduling.fake_pool import FakePool, FakeWorkerInfo

MIB = 1024 * 1024
GPU_PID, CPU_PID = 4242, 4243


class FakeNvmlError(Exception):
    pass


@dataclass
class FakeNvml:
    """Two GPUs; the GPU worker's process holds 512 MiB on GPU 0 and 64 MiB on GPU 1."""

    init_error: Exception | None = None
    query_error: Exception | None = None
    calls: list[str] = field(default_factory=list)

    def module(self) -> types.ModuleType:
        """A module with the pynvml names bound to this fake's methods."""
        mod = types.ModuleType("pynvml")
        names = {
            "nvmlInit": self.init,
            "nvmlDeviceGetCount": self.count,
            "nvmlDeviceGetHandleByIndex": self.handle,
            "nvmlDeviceGetUtilizationRates": self.rates,
            "nvmlDeviceGetMemoryInfo": self.memory_info,
            "nvmlDeviceGetComputeRunningProcesses": self.processes,
        }
        for name, function in names.items():
            setattr(mod, name, function)
        return mod

    def init(self) -> None:
        self.calls.append("init")
        if self.init_error is not None:
            raise self.init_error

    def count(self) -> int:
        self.calls.append("count")
        return 2

    def handle(self, index: int) -> int:
        return index

    def rates(self, handle: int) -> Any:
        return types.SimpleNamespace(gpu=37 + handle, memory=12 + handle)

    def memory_info(self, handle: int) -> Any:
        return types.SimpleNamespace(used=(2048 + handle) * MIB + 123, total=80 * 1024 * MIB)

    def processes(self, handle: int) -> list[Any]:
        if self.query_error is not None:
            raise self.query_error
        mine = 512 * MIB if handle == 0 else 64 * MIB
        return [
            types.SimpleNamespace(pid=GPU_PID, usedGpuMemory=mine),
            types.SimpleNamespace(pid=99999, usedGpuMemory=None),  # not visible to us
        ]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class GpuPool(FakePool):
    """One worker on GPU 0 and one CPU worker."""

    def describe(self) -> list[FakeWorkerInfo]:
        return [
            FakeWorkerInfo("9000", GPU_PID, "READY", 1700000000.5, 0, 1024),
            FakeWorkerInfo("9001", CPU_PID, "READY", 1700000000.5, None, 2048),
        ]


def entry() -> ModelVersionEntry:
    spec = ModelVersionConfig(
        name="m",
        version="1.0",
        url="m.mar",
        mar_name="m.mar",
        runtime="python",
        handler="h.py",
        min_workers=2,
        max_workers=2,
        batch_size=1,
        max_batch_delay=100,
        response_timeout=120,
        startup_timeout=120,
        job_queue_size=100,
        model_dir="/tmp",
    )
    pool = GpuPool(workers=2)
    return ModelVersionEntry(
        spec, pool, Batcher(pool, batch_size=1, capacity=100, unavailable_message="none")
    )


def described_workers(reader: WorkerGpuMemory) -> list[dict[str, Any]]:
    body = json.loads(json.dumps(render_status(model_status(entry(), is_default=True, gpu=reader))))
    workers: list[dict[str, Any]] = body["workers"]
    return workers


def scraped(reader: WorkerGpuMemory) -> dict[str, Any]:
    system = SystemMetrics(
        "h",
        frontend_specs(None),
        interval_s=60,
        enabled=False,
        worker_pids=lambda: [("m", "1.0", "9000", GPU_PID), ("m", "1.0", "9001", CPU_PID)],
        worker_gpu=reader,
    )
    text = render_text(system).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def install(monkeypatch: pytest.MonkeyPatch, nvml: FakeNvml | None) -> None:
    # ``None`` in sys.modules makes ``import pynvml`` raise ImportError (package absent).
    monkeypatch.setitem(sys.modules, "pynvml", None if nvml is None else nvml.module())


def test_gpu_worker_memory_in_describe_json(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, FakeNvml())
    gpu_worker, cpu_worker = described_workers(WorkerGpuMemory(clock=Clock()))
    assert gpu_worker["gpu"] is True
    assert gpu_worker["gpuUsage"] == (
        "gpuId::0 utilization.gpu [%]::37 % utilization.memory [%]::12 % "
        "memory.used [MiB]::2048 MiB"
    )
    assert gpu_worker["gpuMemoryUsage"] == (512 + 64) * MIB
    assert list(gpu_worker)[-1] == "gpuMemoryUsage"  # after TorchServe's keys
    assert cpu_worker["gpu"] is False and cpu_worker["gpuUsage"] == "N/A"
    assert "gpuMemoryUsage" not in cpu_worker


def test_gpu_worker_memory_in_metric(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, FakeNvml())
    family = scraped(WorkerGpuMemory(clock=Clock()))["torchwick_worker_gpu_memory_bytes"]
    assert family.type == "gauge"
    got = {(s.labels["worker_id"], s.labels["gpu"]): s.value for s in family.samples}
    assert got == {("9000", "0"): 512.0 * MIB, ("9000", "1"): 64.0 * MIB}
    assert {s.labels["model_name"] for s in family.samples} == {"m"}
    assert {s.labels["model_version"] for s in family.samples} == {"1.0"}


def test_without_nvml_no_metric_and_na(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, None)
    reader = WorkerGpuMemory(clock=Clock())
    workers = described_workers(reader)
    assert [w["gpuUsage"] for w in workers] == ["N/A", "N/A"]
    assert not any("gpuMemoryUsage" in w for w in workers)
    assert "torchwick_worker_gpu_memory_bytes" not in scraped(reader)
    assert reader.unavailable == "nvidia-ml-py is not installed"
    assert reader.by_pid() == {}


def test_nvml_init_failure_does_not_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = FakeNvml(init_error=FakeNvmlError("Driver Not Loaded"))
    install(monkeypatch, nvml)
    reader = WorkerGpuMemory(clock=Clock())
    assert [w["gpuUsage"] for w in described_workers(reader)] == ["N/A", "N/A"]
    assert "torchwick_worker_gpu_memory_bytes" not in scraped(reader)
    assert reader.unavailable is not None and "Driver Not Loaded" in reader.unavailable
    assert nvml.calls == ["init"]  # not retried on every call


def test_nvml_query_failure_is_empty_for_the_interval_then_retried(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    nvml = FakeNvml(query_error=FakeNvmlError("GPU is lost"))
    install(monkeypatch, nvml)
    clock = Clock()
    reader = WorkerGpuMemory(clock=clock)
    with caplog.at_level(logging.WARNING):
        assert [w["gpuUsage"] for w in described_workers(reader)] == ["N/A", "N/A"]
        clock.now += 5
        assert "torchwick_worker_gpu_memory_bytes" not in scraped(reader)
    warnings = [r for r in caplog.records if "GPU is lost" in r.getMessage()]
    assert len(warnings) == 1  # one line per distinct error, not per call
    nvml.query_error = None
    clock.now += 5
    assert scraped(reader)["torchwick_worker_gpu_memory_bytes"].samples


def test_answers_are_cached_for_the_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = FakeNvml()
    install(monkeypatch, nvml)
    clock = Clock()
    reader = WorkerGpuMemory(clock=clock, ttl_s=1.0)
    first = reader.snapshot()
    clock.now += 0.5
    described_workers(reader)
    scraped(reader)
    assert reader.snapshot() is first
    assert nvml.calls.count("count") == 1
    clock.now += 1.0
    assert reader.snapshot() is not first
    assert nvml.calls.count("count") == 2
    assert nvml.calls.count("init") == 1
