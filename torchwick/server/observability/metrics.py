"""The frontend's Prometheus metrics, counted cheaply and exported through prometheus-client.

Counting happens on the hot path of every request, so it is a plain integer add on a list
(no locks, no label lookups): everything runs on the one event loop. prometheus-client sees
the numbers only at scrape time, through ``FrontendMetrics.collect`` (a registry Collector).

Metric names, types and label names are TorchServe's (``ts_metrics`` in its metrics.yaml):

- ``Requests2XX`` / ``Requests4XX`` / ``Requests5XX`` (Level="Host", Hostname): every HTTP
  response on every listener; 1xx and 3xx count as 5XX, as in TorchServe.
- ``ts_inference_requests_total`` (model_name, model_version, hostname): each predict call.
- ``ts_inference_latency_microseconds``: sum of arrival-to-response times.
- ``ts_queue_latency_microseconds``: sum of time requests spent queued before their batch
  formed. Read at scrape time from the data plane's batcher counters (``queue_source``), so
  it costs nothing per request; its ``model_version`` is the version that served.

For the first two, ``model_version`` is ``default`` when the request named no version
(TorchServe's label).

``metrics_mode`` (TorchServe's semantics): ``prometheus`` exports all of the above plus the
phase histograms (``phases.py``); ``legacy`` exports only the three ``ts_*`` counters; ``log``
exports nothing here (TorchServe's ``/metrics`` is empty in log mode) and the frontend
metrics go to ``ts_metrics.log`` instead (``ts_log.py``). The histograms exist only in
``prometheus`` mode, so the other modes pay nothing for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Protocol

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from torchwick.handlers.messages import BatchTimings
from torchwick.handlers.metrics_config import MetricSpec

from .phases import PhaseHistograms, VersionSeries
from .ts_metrics import LogSeries, TsMetricsLog, frontend_specs

HOST_LEVEL = "Host"
DEFAULT_VERSION_LABEL = "default"

_HELP = "Torchserve prometheus {kind} metric with unit: {unit}"


class QueueStats(Protocol):
    """The part of the scheduler's ``BatcherStats`` the queue latency metric reads."""

    @property
    def queue_time_s(self) -> float:
        """Total seconds dispatched requests waited in the queue."""
        ...

    @property
    def pending(self) -> int:
        """Requests queued now."""
        ...


#: ``(model, version, stats)`` for every registered version (``DataPlane.batcher_stats``).
QueueSource = Callable[[], Iterable[tuple[str, str, QueueStats]]]


class ModelCounters:
    """The per-model-version request counters (mutable; owned by ``FrontendMetrics``)."""

    __slots__ = ("latency_us", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.latency_us = 0


class FrontendMetrics(Collector):
    """The frontend counters and the prometheus-client registry that exports them.

    ``specs`` (``ts_metrics.frontend_specs``) decides which of TorchServe's frontend metrics
    exist and their label names; ``ts_log`` receives every event in ``log`` and ``legacy``
    modes. Not thread-safe by design: only the event loop calls the counting methods.
    """

    def __init__(
        self,
        hostname: str,
        queue_source: QueueSource | None = None,
        *,
        mode: str = "prometheus",
        latency_buckets: Sequence[float] | None = None,
        specs: Mapping[str, MetricSpec] | None = None,
        ts_log: TsMetricsLog | None = None,
    ) -> None:
        self.hostname = hostname
        self.queue_source = queue_source
        self.mode = mode
        self.specs = dict(specs) if specs is not None else frontend_specs(None)
        self.ts_log = ts_log
        #: Index ``status // 100``; see ``count_response``.
        self._responses = [0, 0, 0, 0, 0, 0]
        self._models: dict[str, dict[str, ModelCounters]] = {}
        self._host = {"Level": HOST_LEVEL, "Hostname": hostname, "hostname": hostname}
        self._log_series: dict[tuple[str, str], LogSeries] = {}
        #: Worker name -> milliseconds its last start took (``WorkerLoadTime``).
        self._load_ms: dict[str, float] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        #: The phase histograms; None outside ``prometheus`` mode.
        self.phases = (
            PhaseHistograms(self.registry, latency_buckets) if mode == "prometheus" else None
        )

    def series(
        self, model: str, version: str, variant: str = ""
    ) -> VersionSeries | LogSeries | None:
        """What the data plane and batcher of one version feed: its phase histograms, or in
        log/legacy mode its ``ts_metrics.log`` events; None when neither applies."""
        if self.phases is not None:
            return self.phases.series(model, version, variant)
        if self.ts_log is None:
            return None
        found = self._log_series.get((model, version))
        if found is None:
            found = self._log_series[(model, version)] = LogSeries(self.ts_log, model, version)
        return found

    def worker_timings(
        self, model: str, version: str
    ) -> Callable[[BatchTimings, float], None] | None:
        """The handler of one version's worker timings (``WorkerSupervisor(on_timings=)``)."""
        series = self.series(model, version)
        return series.worker_timings if series is not None else None

    def worker_loaded(self, worker: str, seconds: float) -> None:
        """A worker (``W-9000-mlp_1.0``) became ready ``seconds`` after its spawn."""
        ms = round(seconds * 1000.0, 3)
        self._load_ms[worker] = ms
        if self.ts_log is not None:
            values = {"WorkerName": worker, "Level": "Host", "Hostname": self.hostname}
            self.ts_log.emit("WorkerLoadTime", ms, values)

    # -- counting (hot path) ---------------------------------------------------------------

    def count_response(self, status: int) -> None:
        """Count one HTTP response by class (2XX, 4XX, else 5XX)."""
        index = status // 100 if 0 <= status < 600 else 5
        self._responses[index] += 1
        if self.ts_log is not None:
            name = "Requests2XX" if index == 2 else "Requests4XX" if index == 4 else "Requests5XX"
            self.ts_log.emit(name, 1.0, self._host)

    def model(self, model: str, version: str | None) -> ModelCounters:
        """The counters of one model version (created on first use)."""
        versions = self._models.get(model)
        if versions is None:
            versions = self._models[model] = {}
        label = version or DEFAULT_VERSION_LABEL
        counters = versions.get(label)
        if counters is None:
            counters = versions[label] = ModelCounters()
        return counters

    def observe_inference(self, model: str, version: str | None, latency_us: int) -> None:
        """Count one predict call and add its arrival-to-response latency."""
        counters = self.model(model, version)
        counters.requests += 1
        counters.latency_us += latency_us
        if self.ts_log is not None:
            values = {"model_name": model, "model_version": version or DEFAULT_VERSION_LABEL}
            values["hostname"] = self.hostname
            self.ts_log.emit("ts_inference_requests_total", 1.0, values)
            self.ts_log.emit("ts_inference_latency_microseconds", float(latency_us), values)

    def forget_model(self, model: str, version: str | None = None) -> None:
        """Drop a model's (or one version's) series, after it is unregistered."""
        if version is None:
            self._models.pop(model, None)
        elif model in self._models:
            self._models[model].pop(version, None)
        if self.phases is not None:
            self.phases.forget(model, version)

    # -- export (scrape time) --------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        """Yield the metric families for prometheus-client (labels in the configured order)."""
        if self.mode == "log":
            return
        if self.mode != "legacy":
            yield from self._host_families()
        yield from self._model_families()

    def _host_families(self) -> Iterator[Metric]:
        responses = self._responses
        other = sum(responses) - responses[2] - responses[4]
        for name, value in (
            ("Requests2XX", responses[2]),
            ("Requests4XX", responses[4]),
            ("Requests5XX", other),
        ):
            spec = self.specs.get(name)
            if spec is not None:
                family = _family(spec)
                family.add_sample(name, self._labels(spec, self._host), float(value))
                yield family
        spec = self.specs.get("WorkerLoadTime")
        if spec is not None and self._load_ms:
            family = _family(spec)
            for worker, ms in sorted(self._load_ms.items()):
                values = {**self._host, "WorkerName": worker}
                family.add_sample("WorkerLoadTime", self._labels(spec, values), ms)
            yield family

    def _model_families(self) -> Iterator[Metric]:
        per_model = (
            ("ts_inference_requests_total", "requests"),
            ("ts_inference_latency_microseconds", "latency_us"),
        )
        for name, attribute in per_model:
            spec = self.specs.get(name)
            if spec is None:
                continue
            family = _family(spec)
            for model, versions in sorted(self._models.items()):
                for version, counters in sorted(versions.items()):
                    value = float(getattr(counters, attribute))
                    family.add_sample(name, self._model_labels(spec, model, version), value)
            yield family
        if self.mode == "prometheus" and self.queue_source is not None:
            yield self._queue_depth()
        name = "ts_queue_latency_microseconds"
        spec = self.specs.get(name)
        if spec is None:
            return
        family = _family(spec)
        if self.queue_source is not None:
            for model, version, stats in sorted(self.queue_source(), key=lambda t: t[:2]):
                value = float(int(stats.queue_time_s * 1_000_000))
                family.add_sample(name, self._model_labels(spec, model, version), value)
        yield family

    def _queue_depth(self) -> Metric:
        family = Metric("torchwick_queue_depth", "Requests queued, not yet running", "gauge")
        if self.queue_source is not None:
            for model, version, stats in sorted(self.queue_source(), key=lambda t: t[:2]):
                labels = {"model_name": model, "model_version": version}
                family.add_sample("torchwick_queue_depth", labels, float(stats.pending))
        return family

    @staticmethod
    def _labels(spec: MetricSpec, values: Mapping[str, str]) -> dict[str, str]:
        return {name: values.get(name, "") for name in spec.dimensions}

    def _model_labels(self, spec: MetricSpec, model: str, version: str) -> dict[str, str]:
        values = {"model_name": model, "model_version": version, "hostname": self.hostname}
        return self._labels(spec, values)


def _family(spec: MetricSpec) -> Metric:
    # ``Metric`` (not CounterMetricFamily) keeps the exact sample name: TorchServe's
    # ``Requests2XX`` has no ``_total`` suffix and must not grow one.
    kind = spec.metric_type.value
    doc = _HELP.format(kind=kind, unit=spec.unit)
    # Declared as a histogram in a metrics.yaml: the server only has a running total for it.
    return Metric(spec.name, doc, "unknown" if kind == "histogram" else kind)
