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

Hot path: the child of every family is looked up once per model version (``VersionSeries``)
and kept; each observation is one ``Histogram.observe`` on a cached child.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

from prometheus_client import Histogram
from prometheus_client.registry import CollectorRegistry

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

Observe = Callable[[float], None]


class PhaseHistograms:
    """The histogram families, registered in ``registry``; ``series`` gives a version's view."""

    def __init__(
        self, registry: CollectorRegistry, latency_buckets: Sequence[float] | None = None
    ) -> None:
        latency = tuple(latency_buckets or DEFAULT_LATENCY_BUCKETS)
        kinds = {"latency": latency, "size": BATCH_SIZE_BUCKETS, "fill": FILL_RATIO_BUCKETS}
        self.families: dict[str, Histogram] = {
            attr: Histogram(name, doc, LABELS, registry=registry, buckets=kinds[kind])
            for attr, name, doc, kind in _FAMILIES
        }
        self._series: dict[tuple[str, str, str], VersionSeries] = {}

    def series(self, model: str, version: str, variant: str = "") -> VersionSeries:
        """The cached children of one model version (and variant); created on first use."""
        key = (model, version, variant)
        found = self._series.get(key)
        if found is None:
            children = {a: h.labels(model, version, variant) for a, h in self.families.items()}
            found = self._series[key] = VersionSeries(children)
        return found

    def forget(self, model: str, version: str | None = None) -> None:
        """Drop a model's (or one version's) series after it is unregistered."""
        for key in [k for k in self._series if k[0] == model and version in (None, k[1])]:
            del self._series[key]
            for histogram in self.families.values():
                with contextlib.suppress(KeyError):
                    histogram.remove(*key)


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
        "_size",
        "_transfer",
        "queue_wait",
        "request",
    )

    def __init__(self, children: dict[str, Histogram]) -> None:
        self.request: Observe = children["request"].observe
        self.queue_wait: Observe = children["queue"].observe
        self._formation: Observe = children["formation"].observe
        self._size: Observe = children["size"].observe
        self._fill: Observe = children["fill"].observe
        self._transfer: Observe = children["transfer"].observe
        self._preprocess: Observe = children["preprocess"].observe
        self._inference: Observe = children["inference"].observe
        self._postprocess: Observe = children["postprocess"].observe
        self._encode: Observe = children["encode"].observe

    def batch_formed(self, size: int, limit: int, formation_s: float) -> None:
        """One batch of ``size`` requests (of at most ``limit``) left the queue."""
        self._size(size)
        self._fill(size / limit)
        self._formation(formation_s)

    def worker_timings(self, timings: BatchTimings, round_trip_s: float) -> None:
        """One batch's phase times from the worker and the frontend's round trip."""
        if timings.worker >= 0:
            self._transfer(max(0.0, round_trip_s - timings.worker))
        if timings.preprocess >= 0:
            self._preprocess(timings.preprocess)
        if timings.inference >= 0:
            self._inference(timings.inference)
        if timings.postprocess >= 0:
            self._postprocess(timings.postprocess)
        if timings.encode >= 0:
            self._encode(timings.encode)
