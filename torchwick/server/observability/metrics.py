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

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from torchwick.handlers.messages import BatchTimings

from .phases import PhaseHistograms

HOST_LEVEL = "Host"
DEFAULT_VERSION_LABEL = "default"

_HELP = "Torchserve prometheus {kind} metric with unit: {unit}"


class QueueStats(Protocol):
    """The part of the scheduler's ``BatcherStats`` the queue latency metric reads."""

    @property
    def queue_time_s(self) -> float:
        """Total seconds dispatched requests waited in the queue."""
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

    Not thread-safe by design: only the event loop calls the counting methods.
    """

    def __init__(
        self,
        hostname: str,
        queue_source: QueueSource | None = None,
        *,
        mode: str = "prometheus",
        latency_buckets: Sequence[float] | None = None,
    ) -> None:
        self.hostname = hostname
        self.queue_source = queue_source
        self.mode = mode
        #: Index ``status // 100``; see ``count_response``.
        self._responses = [0, 0, 0, 0, 0, 0]
        self._models: dict[str, dict[str, ModelCounters]] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        #: The phase histograms; None outside ``prometheus`` mode.
        self.phases = (
            PhaseHistograms(self.registry, latency_buckets) if mode == "prometheus" else None
        )

    def worker_timings(
        self, model: str, version: str
    ) -> Callable[[BatchTimings, float], None] | None:
        """The handler of one version's worker timings (``WorkerSupervisor(on_timings=)``)."""
        if self.phases is None:
            return None
        return self.phases.series(model, version).worker_timings

    # -- counting (hot path) ---------------------------------------------------------------

    def count_response(self, status: int) -> None:
        """Count one HTTP response by class (2XX, 4XX, else 5XX)."""
        self._responses[status // 100 if 0 <= status < 600 else 5] += 1

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
        """Yield the metric families for prometheus-client (labels in TorchServe's order)."""
        if self.mode == "log":
            return
        if self.mode != "legacy":
            yield from self._host_families()
        yield from self._model_families()

    def _host_families(self) -> Iterator[Metric]:
        host_labels = {"Level": HOST_LEVEL, "Hostname": self.hostname}
        for index, name in ((2, "Requests2XX"), (4, "Requests4XX")):
            family = _family(name, "Count")
            family.add_sample(name, dict(host_labels), float(self._responses[index]))
            yield family
        other = sum(self._responses) - self._responses[2] - self._responses[4]
        family = _family("Requests5XX", "Count")
        family.add_sample("Requests5XX", dict(host_labels), float(other))
        yield family

    def _model_families(self) -> Iterator[Metric]:

        per_model = (
            ("ts_inference_requests_total", "Count", "requests"),
            ("ts_inference_latency_microseconds", "Microseconds", "latency_us"),
        )
        for name, unit, attribute in per_model:
            family = _family(name, unit)
            for model, versions in sorted(self._models.items()):
                for version, counters in sorted(versions.items()):
                    value = float(getattr(counters, attribute))
                    family.add_sample(name, self._model_labels(model, version), value)
            yield family
        name = "ts_queue_latency_microseconds"
        family = _family(name, "Microseconds")
        if self.queue_source is not None:
            for model, version, stats in sorted(self.queue_source(), key=lambda t: t[:2]):
                value = float(int(stats.queue_time_s * 1_000_000))
                family.add_sample(name, self._model_labels(model, version), value)
        yield family

    def _model_labels(self, model: str, version: str) -> dict[str, str]:
        return {"model_name": model, "model_version": version, "hostname": self.hostname}


def _family(name: str, unit: str) -> Metric:
    # ``Metric`` (not CounterMetricFamily) keeps the exact sample name: TorchServe's
    # ``Requests2XX`` has no ``_total`` suffix and must not grow one.
    return Metric(name, _HELP.format(kind="counter", unit=unit), "counter")
