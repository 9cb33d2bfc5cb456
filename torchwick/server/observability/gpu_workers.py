"""GPU memory per worker process, and each GPU's usage, from NVML (optional ``nvidia-ml-py``).

``WorkerGpuMemory.snapshot()`` asks NVML, per device, for its utilisation rates, its memory
info and its compute processes (``nvmlDeviceGetComputeRunningProcesses``: pid and
``usedGpuMemory``). The answer is kept for ``ttl_s`` seconds (1 s by default, measured by the
injected ``clock``) so that describe calls and scrapes in a burst ask NVML once.

Describe uses it for TorchServe's ``gpuUsage`` string and torchwick's ``gpuMemoryUsage``;
``/metrics`` for ``torchwick_worker_gpu_memory_bytes``.

Failure mode: without the package, without a driver, or when ``nvmlInit`` fails, every
snapshot is empty from then on (one DEBUG line says why; the system-metrics sampler already
logs the reason at INFO). A query that raises during a refresh gives an empty snapshot for
that interval and one WARNING per distinct error; nothing here raises to the caller.
NVML lists host pids: in a container with its own pid namespace no worker pid matches, so
per-worker values stay unknown while the per-GPU ``gpuUsage`` still shows.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from torchwick.server.contracts import GpuUsage

logger = logging.getLogger(__name__)

#: ``(model, version, worker id, pid)`` of every running worker.
WorkerPids = Callable[[], Iterable[tuple[str, str, str, int]]]


@dataclass(frozen=True, slots=True)
class GpuSnapshot:
    """``devices``: usage per GPU index; ``processes``: pid -> GPU index -> bytes used."""

    devices: Mapping[int, GpuUsage] = field(default_factory=dict)
    processes: Mapping[int, Mapping[int, int]] = field(default_factory=dict)

    def process_bytes(self, pid: int | None) -> int | None:
        """GPU memory ``pid`` holds over all GPUs; ``None`` when NVML does not list it."""
        if pid is None or pid not in self.processes:
            return None
        return sum(self.processes[pid].values())


EMPTY = GpuSnapshot(MappingProxyType({}), MappingProxyType({}))


def _import_nvml() -> Any:
    return importlib.import_module("pynvml")


class WorkerGpuMemory:
    """Cached NVML reads (see the module docs). Safe to call from several threads."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        ttl_s: float = 1.0,
        load: Callable[[], Any] = _import_nvml,
    ) -> None:
        self._clock = clock
        self._ttl_s = ttl_s
        self._load = load
        self._nvml: Any = None
        self._unavailable: str | None = None
        self._snapshot = EMPTY
        self._taken_at: float | None = None
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    @property
    def unavailable(self) -> str | None:
        """Why NVML cannot be used (``None`` while it can or has not been tried yet)."""
        return self._unavailable

    def snapshot(self) -> GpuSnapshot:
        """The usage of every GPU and the memory of every compute process on it."""
        with self._lock:
            now = self._clock()
            if self._taken_at is not None and now - self._taken_at < self._ttl_s:
                return self._snapshot
            self._snapshot = self._read()
            self._taken_at = now
            return self._snapshot

    def by_pid(self) -> Mapping[int, Mapping[int, int]]:
        """pid -> GPU index -> bytes of GPU memory used (empty without NVML)."""
        return self.snapshot().processes

    def worker_rows(
        self, workers: Iterable[tuple[str, str, str, int]]
    ) -> Iterator[tuple[str, str, str, str, int]]:
        """``(model, version, worker id, gpu, bytes)`` for each worker NVML lists."""
        processes = self.by_pid()
        if not processes:
            return
        for model, version, worker_id, pid in workers:
            for gpu, used in sorted(processes.get(pid, {}).items()):
                yield model, version, worker_id, str(gpu), used

    def _started(self) -> Any:
        if self._nvml is not None or self._unavailable is not None:
            return self._nvml
        try:
            nvml = self._load()
        except ImportError:
            self._unavailable = "nvidia-ml-py is not installed"
        else:
            try:
                nvml.nvmlInit()
            except Exception as exc:  # NVMLError subclasses: no driver, no library
                self._unavailable = f"NVML is not available ({exc})"
            else:
                self._nvml = nvml
        if self._unavailable is not None:
            logger.debug("no per-worker GPU memory: %s", self._unavailable)
        return self._nvml

    def _read(self) -> GpuSnapshot:
        nvml = self._started()
        if nvml is None:
            return EMPTY
        try:
            return _query(nvml)
        except Exception as exc:  # any NVMLError (GPU lost, permission) or a bad answer
            text = f"{type(exc).__name__}: {exc}"
            if text not in self._warned:
                self._warned.add(text)
                logger.warning("cannot read GPU usage from NVML: %s", text)
            return EMPTY


def _query(nvml: Any) -> GpuSnapshot:
    devices: dict[int, GpuUsage] = {}
    processes: dict[int, dict[int, int]] = {}
    for index in range(int(nvml.nvmlDeviceGetCount())):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        rates = nvml.nvmlDeviceGetUtilizationRates(handle)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        devices[index] = GpuUsage(index, int(rates.gpu), int(rates.memory), int(memory.used))
        for process in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
            used = process.usedGpuMemory
            if used is None:  # NVML_VALUE_NOT_AVAILABLE (no permission to see it)
                continue
            per_gpu = processes.setdefault(int(process.pid), {})
            per_gpu[index] = per_gpu.get(index, 0) + int(used)
    return GpuSnapshot(devices, processes)


_shared: WorkerGpuMemory | None = None
_shared_lock = threading.Lock()


def shared_worker_gpu_memory() -> WorkerGpuMemory:
    """The process-wide instance describe and ``/metrics`` use unless given their own."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = WorkerGpuMemory()
        return _shared
