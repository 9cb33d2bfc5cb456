"""``ts.metrics.metric``, ``metrics_store``, ``metric_cache_*``, ``unit``, ``metric_abstract``.

TorchServe's remaining metrics modules on top of ``torchwick.handlers.metrics``:

* ``Metric`` (``ts.metrics.metric``): one named value with ``Dimension`` objects; ``update``
  and ``reset`` keep the value, ``__str__`` is TorchServe's metric log line;
* ``MetricsStore`` (``ts.metrics.metrics_store``, deprecated in TorchServe, used by its
  ``MockContext``): collects ``Metric`` objects in ``store`` instead of emitting them;
* ``MetricsCacheYamlImpl(config_file_path)`` (``ts.metrics.metric_cache_yaml_impl``): a
  ``context.metrics`` cache whose ``initialize_cache()`` pre-registers the file's
  ``model_metrics``; records go to ``emit`` (default: dropped);
* the error classes of ``ts.metrics.metric_cache_errors`` and ``Units``.

Failure mode: ``MetricsCacheYamlImpl`` raises ``MetricsConfigError`` for a file it cannot use;
``MetricsStore`` raises ``ValueError`` for a wrong time or size unit, as TorchServe does.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import yaml

from ..messages import MetricRecord
from ..metrics import (
    UNITS,
    CachingMetric,
    Dimension,
    MetricsCache,
    MetricsCacheKeyError,
    MetricTypes,
)
from ..metrics_config import MetricsConfigError, load_metrics_config, preregister

__all__ = [
    "CachingMetric",
    "Dimension",
    "GeneralMetricsCacheError",
    "Metric",
    "MetricAbstract",
    "MetricCacheAbstract",
    "MetricTypes",
    "MetricsCacheIOError",
    "MetricsCacheKeyError",
    "MetricsCachePyYamlError",
    "MetricsCacheTypeError",
    "MetricsCacheValueError",
    "MetricsCacheYamlImpl",
    "MetricsConfigError",
    "MetricsStore",
    "Units",
]

#: ``ts.metrics.metric_abstract.MetricAbstract``: the declared-metric type.
MetricAbstract = CachingMetric
#: ``ts.metrics.metric_cache_abstract.MetricCacheAbstract``: the ``context.metrics`` type.
MetricCacheAbstract = MetricsCache


class GeneralMetricsCacheError(Exception):
    """Any other metrics-cache failure."""


class MetricsCacheIOError(OSError):
    """The metrics file could not be read."""


class MetricsCachePyYamlError(yaml.YAMLError):
    """The metrics file is not valid YAML."""


class MetricsCacheTypeError(TypeError):
    """A metrics-cache argument has the wrong type."""


class MetricsCacheValueError(ValueError):
    """A metrics-cache argument has a wrong value."""


class Units:
    """TorchServe's unit table: ``Units().units[short] -> long name``."""

    def __init__(self) -> None:
        self.units: dict[str | None, str] = dict(UNITS.items())
        self.units[None] = "unit"


class Metric:
    """A metric value with its dimensions (TorchServe's ``ts.metrics.metric.Metric``)."""

    def __init__(  # noqa: PLR0917 - TorchServe's positional signature
        self,
        name: str,
        value: float,
        unit: str | None,
        dimensions: list[Dimension],
        request_id: str | None = None,
        metric_method: str | None = None,
    ) -> None:
        self.name = name
        self.value = value
        self.unit = UNITS.get(unit, unit) if unit is not None else "unit"
        self.dimensions = list(dimensions)
        self.dimension_names = [d.name for d in self.dimensions]
        self.dimension_values = [d.value for d in self.dimensions]
        self.request_id = request_id
        self.metric_method = metric_method
        self.metric_type = MetricTypes.COUNTER

    def update(self, value: float) -> None:
        """Counters add up; other metrics keep the latest value."""
        if self.metric_method == "counter":
            self.value += value
        else:
            self.value = value

    def reset(self) -> None:
        self.value = 0

    def __str__(self) -> str:
        dims = ",".join(str(d) for d in self.dimensions)
        line = f"{self.name}.{self.unit}:{self.value}|#{dims}|#hostname:{socket.gethostname()}"
        line += f",{int(time.time())}"
        return f"{line},{self.request_id}" if self.request_id else line

    def to_dict(self) -> dict[str, Any]:
        return {
            "MetricName": self.name,
            "Value": self.value,
            "Unit": self.unit,
            "Dimensions": self.dimensions,
            "Timestamp": int(time.time()),
            "HostName": socket.gethostname(),
            "RequestId": self.request_id,
        }


class MetricsStore:
    """The deprecated metrics API TorchServe's ``MockContext`` uses: values kept in ``store``."""

    def __init__(self, request_ids: Any, model_name: str) -> None:
        self.store: list[Metric] = []
        self.request_ids = request_ids
        self.model_name = model_name
        self.cache: dict[str, Metric] = {}

    def _req(self, idx: Any) -> str | None:
        ids = self.request_ids
        if isinstance(ids, dict):
            if idx is not None and idx in ids:
                return str(ids[idx])
            return ",".join(str(v) for v in ids.values())
        return None if ids is None else str(ids)

    def _add_or_update(  # noqa: PLR0917 - TorchServe's positional signature
        self,
        name: str,
        value: float,
        req_id: str | None,
        unit: str | None,
        metrics_method: str | None = None,
        dimensions: list[Dimension] | None = None,
    ) -> None:
        if dimensions is not None and not isinstance(dimensions, list):
            raise ValueError("Please provide a list of dimensions")
        dims = list(dimensions or [])
        if req_id is None:
            dims.append(Dimension("Level", "Error"))
        else:
            dims += [Dimension("ModelName", self.model_name), Dimension("Level", "Model")]
        key = "-".join([name, str(unit), str(req_id), *(str(d) for d in dims)])
        if key in self.cache:
            self.cache[key].update(value)
            return
        metric = Metric(name, value, unit, dims, req_id, metrics_method)
        self.store.append(metric)
        self.cache[key] = metric

    def add_counter(self, name: str, value: float, idx: Any = None, dimensions: Any = None) -> None:
        self._add_or_update(name, value, self._req(idx), "count", "counter", dimensions)

    def add_time(
        self, name: str, value: float, idx: Any = None, unit: str = "ms", dimensions: Any = None
    ) -> None:
        if unit not in ("ms", "s"):
            raise ValueError("the unit for a timed metric should be one of ['ms', 's']")
        self._add_or_update(name, value, self._req(idx), unit, None, dimensions)

    def add_size(
        self, name: str, value: float, idx: Any = None, unit: str = "MB", dimensions: Any = None
    ) -> None:
        if unit not in ("MB", "kB", "GB", "B"):
            raise ValueError("The unit for size based metric is one of ['MB','kB', 'GB', 'B']")
        self._add_or_update(name, value, self._req(idx), unit, None, dimensions)

    def add_percent(self, name: str, value: float, idx: Any = None, dimensions: Any = None) -> None:
        self._add_or_update(name, value, self._req(idx), "percent", None, dimensions)

    def add_error(self, name: str, value: float, dimensions: Any = None) -> None:
        self._add_or_update(name, value, None, "", None, dimensions)

    def add_metric(
        self, name: str, value: float, unit: str, idx: Any = None, dimensions: Any = None
    ) -> None:
        self._add_or_update(name, value, self._req(idx), unit, None, dimensions)


class MetricsCacheYamlImpl(MetricsCache):
    """A metrics cache configured from a metrics.yaml (see the module docstring)."""

    def __init__(
        self,
        config_file_path: str,
        emit: Callable[[MetricRecord], None] | None = None,
        model_name: str = "",
    ) -> None:
        super().__init__(model_name, emit or (lambda _record: None))
        self.config_file_path = config_file_path
        self.config = load_metrics_config(config_file_path)
        self.request_ids: Any = None

    def initialize_cache(self) -> None:
        """Declare the file's ``model_metrics``."""
        preregister(self, self.config)

    def set_request_ids(self, request_ids: Any) -> None:
        self.request_ids = request_ids

    def cache_keys(self) -> list[str]:
        """``"<type>:<name>"`` for every declared metric."""
        return [f"{kind.value}:{name}" for name, kind in self._cache]
