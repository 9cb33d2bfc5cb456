"""System metrics every ``metric_time_interval`` seconds, and per-worker memory at scrape time.

TorchServe's names, units and labels (``Level=Host``, ``Hostname``; ``DeviceId`` per GPU):
``CPUUtilization`` (Percent, busy share of all CPUs since the previous sample, from
``/proc/stat``), ``MemoryUsed``/``MemoryAvailable`` (Megabytes) and ``MemoryUtilization``
(Percent) from ``/proc/meminfo``, ``DiskUsage``/``DiskAvailable`` (Gigabytes) and
``DiskUtilization`` (Percent) of the file system holding the working directory, and with
NVML (the optional ``nvidia-ml-py`` package) ``GPUMemoryUsed`` (Megabytes),
``GPUMemoryUtilization`` and ``GPUUtilization`` (Percent) per GPU. Without the package, NVML
or a GPU, there are no GPU metrics and one INFO line says why.

In ``prometheus`` mode the latest sample is exported as gauges; in ``log`` and ``legacy`` modes
each sample is a line of ``ts_metrics.log``. The sampler is off with
``disable_system_metrics``. ``torchwick_worker_memory_bytes`` (model_name, model_version,
worker_id) is the resident set size of each worker process, read when scraped (the same
value as describe's ``memoryUsage``). ``torchwick_worker_gpu_memory_bytes`` (model_name,
model_version, worker_id, gpu) is the GPU memory each worker process holds per GPU, from NVML
(``gpu_workers``); without NVML, or when NVML lists no worker process, the family is absent.

Failure mode: a source that cannot be read (not Linux, a container without ``/proc``) drops
only its own metrics, logged once; sampling never fails the server.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from torchwick.handlers.metrics_config import MetricSpec

from .gpu_workers import WorkerGpuMemory, WorkerPids, shared_worker_gpu_memory
from .ts_metrics import TsMetricsLog

logger = logging.getLogger(__name__)

_MB = 1024 * 1024
_GB = 1024 * 1024 * 1024
_HELP = "Torchserve prometheus gauge metric with unit: {unit}"

#: ``(model, version, worker id, resident bytes)`` of every worker (``worker_memory``).
WorkerMemory = Callable[[], Iterable[tuple[str, str, str, int]]]
Sample = dict[tuple[str, str], float]  # (name, DeviceId or "") -> value


def read_cpu_times(path: str = "/proc/stat") -> tuple[int, int]:
    """``(busy, total)`` jiffies of all CPUs since boot."""
    with open(path, encoding="ascii") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])
    return total - idle, total


def read_memory(path: str = "/proc/meminfo") -> tuple[float, float]:
    """``(total, available)`` bytes."""
    values: dict[str, int] = {}
    with open(path, encoding="ascii") as meminfo:
        for line in meminfo:
            key, _, rest = line.partition(":")
            values[key] = int(rest.split()[0]) * 1024
    return float(values["MemTotal"]), float(values["MemAvailable"])


class GpuProbe:
    """NVML access when ``nvidia-ml-py`` and a GPU are there; else ``reason`` says why not."""

    def __init__(self) -> None:
        self.nvml: Any = None
        self.count = 0
        self.reason = ""
        try:
            import pynvml  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            self.reason = "nvidia-ml-py is not installed"
            return
        try:
            pynvml.nvmlInit()
            self.count = int(pynvml.nvmlDeviceGetCount())
        except Exception as exc:  # pynvml raises NVMLError subclasses (no driver, no library)
            self.reason = f"NVML is not available ({exc})"
            return
        if self.count == 0:
            self.reason = "NVML sees no GPU"
            return
        self.nvml = pynvml

    def sample(self) -> Sample:
        """Per GPU: memory used (MB), memory and compute utilisation (Percent)."""
        out: Sample = {}
        nvml = self.nvml
        if nvml is None:
            return out
        for index in range(self.count):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            rates = nvml.nvmlDeviceGetUtilizationRates(handle)
            device = str(index)
            out["GPUMemoryUsed", device] = memory.used / _MB
            out["GPUMemoryUtilization", device] = 100.0 * memory.used / max(1, memory.total)
            out["GPUUtilization", device] = float(rates.gpu)
        return out


class SystemMetrics(Collector):
    """The sampler and its Prometheus export (see the module docs).

    ``gpu`` overrides the NVML probe (tests); ``worker_pids`` lists the running workers for
    the per-worker GPU memory, read through ``worker_gpu`` (the shared reader by default).
    """

    def __init__(
        self,
        hostname: str,
        specs: Mapping[str, MetricSpec],
        *,
        interval_s: float,
        enabled: bool,
        ts_log: TsMetricsLog | None = None,
        worker_memory: WorkerMemory | None = None,
        gpu: GpuProbe | None = None,
        disk_path: str = ".",
        worker_pids: WorkerPids | None = None,
        worker_gpu: WorkerGpuMemory | None = None,
    ) -> None:
        self.hostname = hostname
        self.specs = dict(specs)
        self.interval_s = interval_s
        self.enabled = enabled
        self.ts_log = ts_log
        self.worker_memory = worker_memory
        self.worker_pids = worker_pids
        self._worker_gpu = worker_gpu
        self.latest: Sample = {}
        self._gpu = gpu
        self._disk_path = disk_path
        self._cpu: tuple[int, int] | None = None
        self._broken: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start sampling on ``loop`` (nothing when disabled)."""
        if not self.enabled or self._task is not None:
            return
        if self._gpu is None:
            self._gpu = GpuProbe()
        if self._gpu.reason:
            logger.info("no GPU metrics: %s", self._gpu.reason)
        self._cpu = self._read("cpu", read_cpu_times)
        self._task = loop.create_task(self._run(), name="torchwick-system-metrics")

    async def close(self) -> None:
        """Stop sampling."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.sample()

    def _read(self, what: str, reader: Callable[[], Any]) -> Any:
        try:
            return reader()
        except (OSError, ValueError, KeyError, IndexError) as exc:
            if what not in self._broken:
                self._broken.add(what)
                logger.warning("system metrics: cannot read %s: %s", what, exc)
            return None

    def sample(self) -> Sample:
        """Take one sample now, keep it for export and log it in log/legacy modes."""
        out: Sample = {}
        cpu = self._read("cpu", read_cpu_times)
        if cpu is not None and self._cpu is not None and cpu[1] > self._cpu[1]:
            busy, total = cpu[0] - self._cpu[0], cpu[1] - self._cpu[1]
            out["CPUUtilization", ""] = round(100.0 * busy / total, 1)
        self._cpu = cpu
        memory = self._read("memory", read_memory)
        if memory is not None:
            total_b, available = memory
            out["MemoryUsed", ""] = round((total_b - available) / _MB, 1)
            out["MemoryAvailable", ""] = round(available / _MB, 1)
            out["MemoryUtilization", ""] = round(100.0 * (total_b - available) / total_b, 1)
        disk = self._read("disk", lambda: shutil.disk_usage(self._disk_path))
        if disk is not None:
            out["DiskUsage", ""] = round(disk.used / _GB, 3)
            out["DiskAvailable", ""] = round(disk.free / _GB, 3)
            out["DiskUtilization", ""] = round(100.0 * disk.used / max(1, disk.total), 1)
        if self._gpu is not None and self._gpu.nvml is not None:
            gpu = self._read("gpu", self._gpu.sample)
            out.update(gpu or {})
        self.latest = {key: value for key, value in out.items() if key[0] in self.specs}
        if self.ts_log is not None:
            for (name, device), value in self.latest.items():
                values = {"Level": "Host", "Hostname": self.hostname, "DeviceId": device}
                self.ts_log.emit(name, value, values)
        return self.latest

    def collect(self) -> Iterator[Metric]:
        """The latest sample as gauges, then the workers' memory and GPU memory."""
        families: dict[str, GaugeMetricFamily] = {}
        for (name, device), value in sorted(self.latest.items()):
            spec = self.specs[name]
            family = families.get(name)
            if family is None:
                doc = _HELP.format(unit=spec.unit)
                family = families[name] = GaugeMetricFamily(name, doc, labels=spec.dimensions)
            values = {"Level": "Host", "Hostname": self.hostname, "DeviceId": device}
            family.add_metric([values.get(d, "") for d in spec.dimensions], value)
        yield from families.values()
        if self.worker_memory is not None:
            family = GaugeMetricFamily(
                "torchwick_worker_memory_bytes",
                "Resident set size of each worker process",
                labels=("model_name", "model_version", "worker_id"),
            )
            for model, version, worker_id, rss in sorted(self.worker_memory()):
                family.add_metric([model, version, worker_id], float(rss))
            yield family
        if self.worker_pids is not None:
            reader = self._worker_gpu or shared_worker_gpu_memory()
            rows = sorted(reader.worker_rows(self.worker_pids()))
            if rows:
                gpu_family = GaugeMetricFamily(
                    "torchwick_worker_gpu_memory_bytes",
                    "GPU memory held by each worker process, per GPU (NVML)",
                    labels=("model_name", "model_version", "worker_id", "gpu"),
                )
                for model, version, worker_id, gpu, used in rows:
                    gpu_family.add_metric([model, version, worker_id, gpu], float(used))
                yield gpu_family
