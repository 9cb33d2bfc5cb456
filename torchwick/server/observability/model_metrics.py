"""Metrics that handlers emit (``context.metrics``, ``HandlerTime``, ``PredictionTime``).

Workers send ``MetricRecord`` values over IPC; the supervisor hands them to
``ModelMetrics.record`` on the event loop. They become visible in two places:

- ``/metrics``: one family per metric name, labelled with the record's dimensions (in the
  handler's order, ``ModelName`` and ``Level`` last) plus ``Hostname``. Counters add up,
  gauges keep the latest value, histograms are exported as summaries (``_count``/``_sum``).
- ``<log_location>/model_metrics.log``: one line per record in TorchServe's metric log shape,
  ``Name.Unit:value|#Dim:val,Dim:val|#hostname:host,timestamp:epoch_s[,request_id]``.

A name reused with another type or other dimension names starts a separate series under the
same family; nothing is dropped. Not thread-safe by design: only the event loop records.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from torchwick.handlers.messages import MetricRecord

from .line_file import BatchedLineFile

MODEL_METRICS_FILE = "model_metrics.log"

_KINDS = {"counter": "counter", "gauge": "gauge", "histogram": "summary"}
_HELP = "Torchserve prometheus {kind} metric with unit: {unit}"

SeriesKey = tuple[str, str, str, tuple[str, ...]]
#: Prometheus' metric and label name rules: anything else would break the whole scrape.
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_UNIT = re.compile(r"[A-Za-z0-9_ /%-]*")
logger = logging.getLogger("torchwick.model_metrics")
LogEntry = tuple[float, str, MetricRecord]


class ModelMetrics(Collector):
    """Aggregates handler metrics for Prometheus and queues them for the metrics log."""

    def __init__(self, hostname: str, log_path: Path | None = None) -> None:
        self.hostname = hostname
        #: (name, type, unit, dimension names) -> label values -> [value] or [count, sum].
        self._series: dict[SeriesKey, dict[tuple[str, ...], list[float]]] = {}
        self.log: BatchedLineFile[LogEntry] | None = (
            BatchedLineFile(log_path, self._format) if log_path is not None else None
        )

    def record(self, model: str, version: str, records: Sequence[MetricRecord]) -> None:
        """Fold records from one worker of ``model``/``version`` into the series."""
        now = time.time()
        for record in records:
            problem = _problem(record)
            if problem is not None:
                # Reported once per record and dropped; the request it came with is unaffected.
                logger.warning(
                    "model %s version %s: handler metric %r dropped: %s",
                    model, version, record.name, problem,
                )  # fmt: skip
                continue
            kind = record.metric_type.lower()
            if kind not in _KINDS:
                kind = "gauge"
            names = tuple(name for name, _ in record.dimensions)
            values = tuple(value for _, value in record.dimensions)
            series = self._series.setdefault((record.name, kind, record.unit, names), {})
            current = series.get(values)
            if kind == "gauge":
                series[values] = [record.value]
            elif kind == "counter":
                series[values] = [(current[0] if current else 0.0) + record.value]
            else:
                count, total = current if current else (0.0, 0.0)
                series[values] = [count + 1, total + record.value]
            if self.log is not None:
                self.log.record((now, self.hostname, record))

    def collect(self) -> Iterator[Metric]:
        """One family per metric name and type, in name order."""
        families: dict[tuple[str, str], Metric] = {}
        for (name, kind, unit, names), series in sorted(self._series.items()):
            family = families.get((name, kind))
            if family is None:
                doc = _HELP.format(kind=kind, unit=unit)
                family = families[(name, kind)] = Metric(name, doc, _KINDS[kind])
            label_names = (*names, "Hostname")
            for values, numbers in sorted(series.items()):
                labels = dict(zip(label_names, (*values, self.hostname), strict=True))
                if kind == "histogram":
                    family.add_sample(f"{name}_count", labels, numbers[0])
                    family.add_sample(f"{name}_sum", labels, numbers[1])
                else:
                    family.add_sample(name, labels, numbers[0])
        yield from families.values()

    @staticmethod
    def _format(batch: list[LogEntry]) -> str:
        lines = []
        for stamp, hostname, record in batch:
            dims = ",".join(f"{name}:{value}" for name, value in record.dimensions)
            tail = f",{record.request_id}" if record.request_id else ""
            lines.append(
                f"{record.name}.{record.unit}:{record.value}|#{dims}"
                f"|#hostname:{hostname},timestamp:{int(stamp)}{tail}\n"
            )
        return "".join(lines)


def _problem(record: MetricRecord) -> str | None:
    """Why a record cannot be exported, or None."""
    if not _NAME.fullmatch(record.name):
        return "the name is not a valid Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)"
    if not _UNIT.fullmatch(record.unit):
        return f"the unit {record.unit!r} has characters a metric log line cannot carry"
    for name, _ in record.dimensions:
        if not _LABEL.fullmatch(name) or name.startswith("__"):
            return f"the dimension name {name!r} is not a valid label name"
    return None
