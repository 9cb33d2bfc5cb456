"""TorchServe's frontend metrics (``ts_metrics`` of metrics.yaml) and their log-mode file.

``frontend_specs(config)`` decides which frontend metrics exist, with which unit, type and
label names: TorchServe's default list without a ``metrics_config`` file, else exactly the
file's ``ts_metrics``. The file is parsed by the same parser the workers use
(``torchwick.handlers.metrics_config``). A frontend metric can only carry dimensions whose
values the server knows (``KNOWN_DIMENSIONS``); naming another one fails at start with the
file, the line and the metric. Names the server never emits are accepted and logged once.

``TsMetricsLog`` writes ``<metrics_location>/ts_metrics.log`` in ``metrics_mode=log`` (and the
non-Prometheus metrics in ``legacy``), one line per event in TorchServe's format::

    Requests2XX.Count:1.0|#Level:Host|#hostname:myhost,timestamp:1717105563

(the ``Hostname``/``hostname`` dimension is the ``#hostname`` tail, as in TorchServe's
``LogMetric``). Recording is one tuple append; formatting and writing happen in batches.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path

from torchwick.handlers.messages import BatchTimings
from torchwick.handlers.metrics import MetricTypes
from torchwick.handlers.metrics_config import MetricsConfig, MetricsConfigError, MetricSpec

from .line_file import BatchedLineFile

TS_METRICS_FILE = "ts_metrics.log"
logger = logging.getLogger(__name__)

_HOST = ("Level", "Hostname")
_MODEL = ("model_name", "model_version", "hostname")
_GPU = ("Level", "DeviceId", "Hostname")

#: TorchServe 0.12's default ``ts_metrics`` (its ts/configs/metrics.yaml).
DEFAULT_TS_METRICS: tuple[MetricSpec, ...] = (
    *(MetricSpec(f"Requests{c}XX", "Count", _HOST, MetricTypes.COUNTER) for c in (2, 4, 5)),
    MetricSpec("ts_inference_requests_total", "Count", _MODEL, MetricTypes.COUNTER),
    MetricSpec("ts_inference_latency_microseconds", "Microseconds", _MODEL, MetricTypes.COUNTER),
    MetricSpec("ts_queue_latency_microseconds", "Microseconds", _MODEL, MetricTypes.COUNTER),
    MetricSpec("QueueTime", "Milliseconds", _HOST, MetricTypes.GAUGE),
    MetricSpec("WorkerThreadTime", "Milliseconds", _HOST, MetricTypes.GAUGE),
    MetricSpec("WorkerLoadTime", "Milliseconds", ("WorkerName", *_HOST), MetricTypes.GAUGE),
    *(
        MetricSpec(f"{n}Utilization", "Percent", _HOST, MetricTypes.GAUGE)
        for n in ("CPU", "Memory", "Disk")
    ),
    MetricSpec("MemoryUsed", "Megabytes", _HOST, MetricTypes.GAUGE),
    MetricSpec("MemoryAvailable", "Megabytes", _HOST, MetricTypes.GAUGE),
    MetricSpec("DiskUsage", "Gigabytes", _HOST, MetricTypes.GAUGE),
    MetricSpec("DiskAvailable", "Gigabytes", _HOST, MetricTypes.GAUGE),
    MetricSpec("GPUMemoryUtilization", "Percent", _GPU, MetricTypes.GAUGE),
    MetricSpec("GPUMemoryUsed", "Megabytes", _GPU, MetricTypes.GAUGE),
    MetricSpec("GPUUtilization", "Percent", _GPU, MetricTypes.GAUGE),
)  # fmt: skip

#: The dimension names the server has values for, per frontend metric.
KNOWN_DIMENSIONS: dict[str, frozenset[str]] = {
    spec.name: frozenset(spec.dimensions) for spec in DEFAULT_TS_METRICS
}
_HOSTNAME_DIMENSIONS = frozenset({"Hostname", "hostname"})

#: ``(stamp, name, value, dimension values)`` queued for the file.
LogEntry = tuple[float, str, float, tuple[str, ...]]


def frontend_specs(config: MetricsConfig | None, source: str = "") -> dict[str, MetricSpec]:
    """The frontend metrics by name (see the module docs); ``MetricsConfigError`` for a
    dimension the server has no value for."""
    if config is None:
        return {spec.name: spec for spec in DEFAULT_TS_METRICS}
    specs: dict[str, MetricSpec] = {}
    for spec in config.ts_metrics:
        known = KNOWN_DIMENSIONS.get(spec.name)
        if known is None:
            logger.warning("%s: ts_metrics %s is not a metric torchwick emits", source, spec.name)
            continue
        unknown = [d for d in spec.dimensions if d not in known]
        if unknown:
            where = f"{source} (line {spec.line})" if spec.line else source
            raise MetricsConfigError(
                f"{where}: ts_metrics {spec.name}: the server has no value for dimension "
                f"{', '.join(unknown)} (it knows {', '.join(sorted(known))})"
            )
        specs[spec.name] = spec
    return specs


class TsMetricsLog:
    """Queues frontend metric events and writes them as TorchServe's log lines."""

    def __init__(self, path: Path, hostname: str, specs: Mapping[str, MetricSpec]) -> None:
        self.hostname = hostname
        self._specs = dict(specs)
        self.file: BatchedLineFile[LogEntry] = BatchedLineFile(path, self._format)

    def wants(self, name: str) -> bool:
        """Whether ``name`` is configured (unconfigured metrics are never written)."""
        return name in self._specs

    def emit(self, name: str, value: float, values: Mapping[str, str]) -> None:
        """Queue one event of ``name`` with the dimension values it has (hot path: cheap)."""
        spec = self._specs.get(name)
        if spec is None:
            return
        dims = tuple(values.get(d, "") for d in spec.dimensions)
        self.file.record((time.time(), name, value, dims))

    def _format(self, batch: list[LogEntry]) -> str:
        lines = []
        for stamp, name, value, dims in batch:
            spec = self._specs[name]
            pairs = ",".join(
                f"{dim}:{val}"
                for dim, val in zip(spec.dimensions, dims, strict=True)
                if dim not in _HOSTNAME_DIMENSIONS
            )
            lines.append(
                f"{name}.{spec.unit}:{float(value)}|#{pairs}"
                f"|#hostname:{self.hostname},timestamp:{int(stamp)}\n"
            )
        return "".join(lines)


class LogSeries:
    """One version's events for ``ts_metrics.log`` (the log-mode ``VersionObserver``)."""

    __slots__ = ("_log", "_model", "last_timings")

    def __init__(self, log: TsMetricsLog, model: str, version: str) -> None:
        self._log = log
        self.last_timings: BatchTimings | None = None
        self._model = {"model_name": model, "model_version": version, "Level": "Host"}

    def request(self, seconds: float) -> None:
        """Counted by ``FrontendMetrics.observe_inference``; nothing more to log."""

    def queue_wait(self, seconds: float) -> None:
        """``QueueTime`` (ms) and ``ts_queue_latency_microseconds`` for one request."""
        self._log.emit("QueueTime", round(seconds * 1000.0, 3), self._model)
        self._log.emit("ts_queue_latency_microseconds", int(seconds * 1e6), self._model)

    def batch_formed(self, size: int, limit: int, formation_s: float) -> None:
        """TorchServe has no batch metric in its log."""

    def worker_timings(self, timings: BatchTimings, round_trip_s: float) -> None:
        """``WorkerThreadTime``: frontend time for the batch outside the worker (ms)."""
        self.last_timings = timings
        if timings.worker >= 0:
            outside = max(0.0, round_trip_s - timings.worker)
            self._log.emit("WorkerThreadTime", round(outside * 1000.0, 3), self._model)
