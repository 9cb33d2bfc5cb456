"""Prometheus metrics of the server's limits: queues, rejections, crash loops, connections.

Kept apart from ``FrontendMetrics`` (TorchServe's metric set); registered on the same
registry, so they appear on the metrics API's ``/metrics``. Everything is read at scrape time
from counters the limits keep anyway, so nothing is added to the request path.

Per model version (labels ``model_name``, ``model_version``, ``hostname``):

- ``torchwick_queue_depth`` (gauge): requests queued and not yet running;
- ``torchwick_queue_rejected_total`` (counter): requests refused with 503 (queue full, or no
  worker to serve);
- ``torchwick_queue_expired_total`` (counter): requests answered 504 because they waited in
  the queue past the response timeout;
- ``torchwick_model_crash_looping`` (gauge): 1 while the version's workers keep failing to
  load (describe ``state`` ``CRASH_LOOPING``), else 0.

Per server (label ``hostname``):

- ``torchwick_connections_open`` (gauge) and ``torchwick_connections_refused_total``,
  ``torchwick_connections_evicted_total``, ``torchwick_connections_timed_out_total``
  (counters): the HTTP connection guard;
- ``torchwick_requests_inflight`` (gauge) and ``torchwick_requests_overloaded_total``
  (counter): the ``max_inflight_requests`` cap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Protocol

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector


class QueueState(Protocol):
    """What the scheduler's ``BatcherStats`` offers these metrics."""

    @property
    def pending(self) -> int: ...
    @property
    def rejected(self) -> int: ...
    @property
    def expired(self) -> int: ...
    @property
    def crash_looping(self) -> bool: ...


class ConnectionCounts(Protocol):
    """The HTTP ``ConnectionGuard``'s counters."""

    @property
    def open(self) -> Sized: ...
    @property
    def refused(self) -> int: ...
    @property
    def evicted(self) -> int: ...
    @property
    def timed_out(self) -> int: ...


class InflightCounts(Protocol):
    """The serving middleware's ``InflightLimit``."""

    @property
    def current(self) -> int: ...
    @property
    def rejected(self) -> int: ...


QueueStates = Callable[[], Iterable[tuple[str, str, QueueState]]]


class LimitMetrics(Collector):
    """See the module docs; ``connections``/``inflight`` are set once the listeners exist."""

    def __init__(self, hostname: str, queues: QueueStates) -> None:
        self.hostname = hostname
        self.queues = queues
        self.connections: ConnectionCounts | None = None
        self.inflight: InflightCounts | None = None

    def collect(self) -> Iterator[Metric]:
        """The families of the module docs."""
        families = {
            "torchwick_queue_depth": _family("torchwick_queue_depth", "gauge", "requests"),
            "torchwick_queue_rejected_total": _family(
                "torchwick_queue_rejected", "counter", "requests"
            ),
            "torchwick_queue_expired_total": _family(
                "torchwick_queue_expired", "counter", "requests"
            ),
            "torchwick_model_crash_looping": _family(
                "torchwick_model_crash_looping", "gauge", "state"
            ),
        }
        for model, version, state in sorted(self.queues(), key=lambda row: row[:2]):
            labels = {"model_name": model, "model_version": version, "hostname": self.hostname}
            values = {
                "torchwick_queue_depth": state.pending,
                "torchwick_queue_rejected_total": state.rejected,
                "torchwick_queue_expired_total": state.expired,
                "torchwick_model_crash_looping": 1 if state.crash_looping else 0,
            }
            for name, value in values.items():
                families[name].add_sample(name, dict(labels), float(value))
        yield from families.values()
        host = {"hostname": self.hostname}
        if self.connections is not None:
            counts = self.connections
            yield _single("torchwick_connections_open", "gauge", len(counts.open), host)
            yield _single("torchwick_connections_refused", "counter", counts.refused, host)
            yield _single("torchwick_connections_evicted", "counter", counts.evicted, host)
            yield _single("torchwick_connections_timed_out", "counter", counts.timed_out, host)
        if self.inflight is not None:
            inflight = self.inflight
            yield _single("torchwick_requests_inflight", "gauge", inflight.current, host)
            yield _single("torchwick_requests_overloaded", "counter", inflight.rejected, host)


def _family(name: str, kind: str, unit: str) -> Metric:
    return Metric(name, f"torchwick limit {kind} ({unit})", kind)


def _single(name: str, kind: str, value: int, labels: dict[str, str]) -> Metric:
    family = _family(name, kind, "count")
    sample = f"{name}_total" if kind == "counter" else name
    family.add_sample(sample, dict(labels), float(value))
    return family
