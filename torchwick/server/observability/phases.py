"""Latency histograms per phase, per model version: prometheus-client histograms, cheap to feed.

Families (labels ``model_name``, ``model_version``, ``variant``; ``variant`` is empty until the
traffic policies route by variant):

- ``torchwick_request_latency_seconds``: arrival to answer, every inference call that reached a
  version's queue (data plane).
- ``torchwick_queue_wait_seconds``: per request, enqueue to batch formation (batcher).
- ``torchwick_batch_formation_seconds``: per batch, its oldest request's wait, i.e. how long
  the batch took to form (batcher; batches never wait on a timer, see the batcher's docs).
- ``torchwick_batch_size`` (samples) and ``torchwick_batch_fill_ratio`` (size / batchSize).
- ``torchwick_worker_transfer_seconds``: per batch, the frontend's round trip to the worker
  minus the worker's own time: frame encoding, the socket both ways, decoding.
- ``torchwick_handler_preprocess_seconds`` / ``_inference_seconds`` / ``_postprocess_seconds``:
  per batch, timed in the worker by ``BaseHandler.handle`` and sent in the answer frame
  (handlers that are plain functions have no phases and add no samples).
- ``torchwick_response_encode_seconds``: per batch, turning the handler's outputs into
  response bodies in the worker.

Hot path: a version's series (``VersionSeries``) is looked up once and kept; an observation
is one ``bisect`` and two additions on plain Python numbers (a prometheus-client
``Histogram.observe`` takes a lock per sample and costs about ten times more, measured by
``benchmarks/metrics_hot_path.py``). The numbers become prometheus-client
``HistogramMetricFamily`` values at scrape time (``PhaseHistograms.collect``). Not
thread-safe by design: only the event loop observes.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from torchwick.handlers.messages import BatchTimings

#: Seconds, from 0.1 ms to 60 s (config.properties ``metrics_histogram_buckets`` overrides).
DEFAULT_LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
BATCH_SIZE_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
FILL_RATIO_BUCKETS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
LABELS = ("model_name", "model_version", "variant")

#: (attribute, family name, help, buckets kind) in exposition order.
_FAMILIES: tuple[tuple[str, str, str, str], ...] = (
    ("request", "torchwick_request_latency_seconds", "Arrival to answer", "latency"),
    ("queue", "torchwick_queue_wait_seconds", "Enqueue to batch formation", "latency"),
    ("formation", "torchwick_batch_formation_seconds", "Oldest request's wait", "latency"),
    ("size", "torchwick_batch_size", "Requests per batch", "size"),
    ("fill", "torchwick_batch_fill_ratio", "Batch size over batchSize", "fill"),
    ("transfer", "torchwick_worker_transfer_seconds", "Round trip minus worker", "latency"),
    ("preprocess", "torchwick_handler_preprocess_seconds", "Handler preprocess", "latency"),
    ("inference", "torchwick_handler_inference_seconds", "Handler inference", "latency"),
    ("postprocess", "torchwick_handler_postprocess_seconds", "Handler postprocess", "latency"),
    ("encode", "torchwick_response_encode_seconds", "Response encoding", "latency"),
)


class _Counts:
    """One histogram child: per-bucket counts (the last one is ``+Inf``) and the sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (``le`` is inclusive).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative ``(le, count)`` pairs ending with ``+Inf``."""
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += count
            out.append((("+Inf" if bound == math.inf else repr(bound)), float(running)))
        return out


class PhaseHistograms(Collector):
    """The histogram families (a registry Collector); ``series`` gives a version's view."""

    def __init__(
        self, registry: CollectorRegistry, latency_buckets: Sequence[float] | None = None
    ) -> None:
        latency = tuple(latency_buckets or DEFAULT_LATENCY_BUCKETS)
        self._bounds = {"latency": latency, "size": BATCH_SIZE_BUCKETS, "fill": FILL_RATIO_BUCKETS}
        self._series: dict[tuple[str, str, str], VersionSeries] = {}
        registry.register(self)

    def series(self, model: str, version: str, variant: str = "") -> VersionSeries:
        """The cached series of one model version (and variant); created on first use."""
        key = (model, version, variant)
        found = self._series.get(key)
        if found is None:
            children = {attr: _Counts(self._bounds[kind]) for attr, _, _, kind in _FAMILIES}
            found = self._series[key] = VersionSeries(children)
        return found

    def forget(self, model: str, version: str | None = None) -> None:
        """Drop a model's (or one version's) series after it is unregistered."""
        for key in [k for k in self._series if k[0] == model and version in (None, k[1])]:
            del self._series[key]

    def collect(self) -> Iterator[Metric]:
        """One ``HistogramMetricFamily`` per phase, series in label order."""
        ordered = sorted(self._series.items())
        for attr, name, doc, _ in _FAMILIES:
            family = HistogramMetricFamily(name, doc, labels=LABELS)
            for labels, series in ordered:
                counts = series.children[attr]
                family.add_metric(list(labels), counts.buckets(), counts.total)
            yield family


class VersionSeries:
    """One version's histogram children: what the batcher, the data plane and the worker
    timings feed (``BatchObserver`` and ``TimingsHandler`` of the scheduler and workers)."""

    __slots__ = (
        "_encode",
        "_fill",
        "_formation",
        "_inference",
        "_postprocess",
        "_preprocess",
        "_queue",
        "_request",
        "_size",
        "_transfer",
        "children",
        "last_timings",
    )

    def __init__(self, children: dict[str, _Counts]) -> None:
        self.children = children
        self.last_timings: BatchTimings | None = None
        self._request = children["request"]
        self._queue = children["queue"]
        self._formation = children["formation"]
        self._size = children["size"]
        self._fill = children["fill"]
        self._transfer = children["transfer"]
        self._preprocess = children["preprocess"]
        self._inference = children["inference"]
        self._postprocess = children["postprocess"]
        self._encode = children["encode"]

    def request(self, seconds: float) -> None:
        """One inference call's arrival-to-answer time (per request: inlined observe)."""
        h = self._request
        h.counts[bisect_left(h.bounds, seconds)] += 1
        h.total += seconds

    def queue_wait(self, seconds: float) -> None:
        """One request's wait from enqueue to batch formation (per request: inlined)."""
        h = self._queue
        h.counts[bisect_left(h.bounds, seconds)] += 1
        h.total += seconds

    def batch_formed(self, size: int, limit: int, formation_s: float) -> None:
        """One batch of ``size`` requests (of at most ``limit``) left the queue."""
        self._size.observe(size)
        self._fill.observe(size / limit)
        self._formation.observe(formation_s)

    def worker_timings(self, timings: BatchTimings, round_trip_s: float) -> None:
        """One batch's phase times from the worker and the frontend's round trip."""
        self.last_timings = timings
        if timings.worker >= 0:
            self._transfer.observe(max(0.0, round_trip_s - timings.worker))
        if timings.preprocess >= 0:
            self._preprocess.observe(timings.preprocess)
        if timings.inference >= 0:
            self._inference.observe(timings.inference)
        if timings.postprocess >= 0:
            self._postprocess.observe(timings.postprocess)
        if timings.encode >= 0:
            self._encode.observe(timings.encode)
