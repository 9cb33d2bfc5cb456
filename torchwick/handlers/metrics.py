"""Custom metrics for handlers: ``context.metrics`` and its helper types.

This reproduces the API TorchServe documents for handlers (``add_metric_to_cache`` +
``CachingMetric.add_or_update``, ``add_metric``, ``add_time``, ``add_size``, ``add_percent``,
``add_counter``, ``get_metric``, ``Dimension``, ``MetricTypes``). Every update is turned into a
``MetricRecord`` at once and handed to the ``emit`` callback the worker gave
``ModelService.load``; nothing is printed to stdout.

Dimensions follow TorchServe: a metric declared with ``add_metric_to_cache`` (or in the
``metrics_config`` file, see ``metrics_config``) has exactly the dimension names it was
declared with; the ``add_*`` helpers append ``ModelName`` and ``Level=Model`` to the
``Dimension`` objects they are given, each only when it is not there already.

Failure mode: an unknown metric type or a non-numeric value raises ``ValueError``/
``TypeError`` in the handler (answered 500). An update whose number of dimension values does
not match the metric's names, a negative counter update (both as in TorchServe), a metric name
that is not a valid Prometheus name, or a unit ``add_time``/``add_size`` do not know is
logged as an error on ``torchwick.model`` (the model log) and dropped; the request carries on.
"""

from __future__ import annotations

import enum
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .messages import MetricRecord

#: TorchServe's short unit names and the names that appear in metric records.
UNITS: dict[str, str] = {
    "ms": "Milliseconds",
    "s": "Seconds",
    "percent": "Percent",
    "count": "Count",
    "MB": "Megabytes",
    "GB": "Gigabytes",
    "kB": "Kilobytes",
    "B": "Bytes",
    "": "unit",
}
_TIME_UNITS = ("ms", "s")
_SIZE_UNITS = ("MB", "kB", "GB", "B")
DEFAULT_DIMENSION_NAMES = ("ModelName", "Level")
logger = logging.getLogger("torchwick.model")
#: Prometheus' metric name rule: a name outside it could not be exported.
_VALID_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


class MetricTypes(enum.Enum):
    """The three metric kinds; values are the lower-case names used in records."""

    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


class MetricsCacheKeyError(KeyError):
    """``get_metric`` asked for a metric that was never added."""


@dataclass(frozen=True, slots=True)
class Dimension:
    """One ``name:value`` label of a metric."""

    name: str
    value: str

    def __str__(self) -> str:
        return f"{self.name}:{self.value}"

    def to_dict(self) -> dict[str, str]:
        """``{"Name": name, "Value": value}``, TorchServe's JSON shape of a dimension."""
        return {"Name": self.name, "Value": self.value}


def _metric_type(value: MetricTypes | str) -> MetricTypes:
    if isinstance(value, MetricTypes):
        return value
    try:
        return MetricTypes(str(value).lower())
    except ValueError:
        raise ValueError(
            f"unknown metric type {value!r}; use counter, gauge or histogram"
        ) from None


def _number(value: object) -> float:
    # bool is an int subclass, but a metric of True is almost certainly a bug.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"metric value must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"metric value must be finite, got {value!r}")
    return number


class CachingMetric:
    """A declared metric: a name, unit, type and dimension names; updates emit records."""

    def __init__(
        self,
        metric_name: str,
        unit: str,
        dimension_names: Sequence[str],
        metric_type: MetricTypes,
        *,
        emit: Callable[[MetricRecord], None],
    ) -> None:
        self.metric_name = metric_name
        self.unit = unit
        self.dimension_names = list(dimension_names)
        self.metric_type = metric_type
        self._emit = emit

    def add_or_update(
        self,
        value: float,
        dimension_values: Sequence[str] | None = None,
        request_id: str | None = "",
    ) -> None:
        """Emit ``value`` with one value per dimension name (else logged and dropped)."""
        number = _number(value)
        if not _VALID_NAME.fullmatch(self.metric_name):
            logger.error(
                "[METRICS]Failed to update metric %r: not a valid metric name "
                "([a-zA-Z_:][a-zA-Z0-9_:]*)",
                self.metric_name,
            )
            return
        values = [str(v) for v in (dimension_values or [])]
        if len(values) != len(self.dimension_names):
            logger.error(
                "[METRICS]Failed to update metric %s: dimension values %s do not match "
                "dimension names %s",
                self.metric_name,
                values,
                self.dimension_names,
            )
            return
        if self.metric_type is MetricTypes.COUNTER and number < 0:
            logger.error(
                "[METRICS]Failed to update metric %s: a counter cannot be decreased (%s)",
                self.metric_name,
                number,
            )
            return
        self._emit(
            MetricRecord(
                name=self.metric_name,
                value=number,
                unit=self.unit,
                metric_type=self.metric_type.value,
                dimensions=tuple(zip(self.dimension_names, values, strict=True)),
                request_id=request_id or None,
            )
        )

    def update(
        self,
        value: float,
        request_id: str | None = "",
        dimensions: Sequence[Dimension] | None = None,
    ) -> None:
        """Legacy form: the metric takes the names of ``dimensions`` and emits their values."""
        dims = list(dimensions or [])
        self.dimension_names = [d.name for d in dims]
        self.add_or_update(value, [d.value for d in dims], request_id)


class MetricsCache:
    """``context.metrics``: declares metrics once and emits each update as a record."""

    def __init__(
        self,
        model_name: str,
        emit: Callable[[MetricRecord], None],
        request_id_for: Callable[[int], str | None] | None = None,
    ) -> None:
        self.model_name = model_name
        self._emit = emit
        self._request_id_for = request_id_for
        self._cache: dict[tuple[str, MetricTypes], CachingMetric] = {}

    def add_metric_to_cache(
        self,
        metric_name: str,
        unit: str | None,
        dimension_names: Sequence[str] | None = None,
        metric_type: MetricTypes | str = MetricTypes.COUNTER,
    ) -> CachingMetric:
        """Declare (or re-declare) a metric with exactly ``dimension_names`` and return it for
        ``add_or_update`` calls."""
        if not isinstance(metric_name, str) or not metric_name.strip():
            raise ValueError("metric name must be a non-empty string")
        kind = _metric_type(metric_type)
        names = [str(n) for n in dimension_names or []]
        metric = CachingMetric(
            metric_name,
            UNITS.get(unit, unit) if unit is not None else "unit",
            names,
            kind,
            emit=self._emit,
        )
        self._cache[(metric_name, kind)] = metric
        return metric

    def get_metric(
        self, metric_name: str, metric_type: MetricTypes | str = MetricTypes.COUNTER
    ) -> CachingMetric:
        """The metric declared under this name and type; ``MetricsCacheKeyError`` if none."""
        key = (metric_name, _metric_type(metric_type))
        try:
            return self._cache[key]
        except KeyError:
            raise MetricsCacheKeyError(
                f"metric {metric_name!r} of type {key[1].value} was not added"
            ) from None

    def _request_id(self, idx: int | str | None) -> str | None:
        # TorchServe's ``idx`` is documented as a request id; handlers pass either the id or
        # the batch index, so an int that is a known batch index is mapped to its id.
        if idx is None:
            return None
        if isinstance(idx, int) and self._request_id_for is not None:
            found = self._request_id_for(idx)
            if found is not None:
                return found
        return str(idx)

    def add_metric(  # noqa: PLR0917 - TorchServe's positional signature
        self,
        name: str,
        value: float,
        unit: str,
        idx: int | str | None = None,
        dimensions: Sequence[Dimension] | None = None,
        metric_type: MetricTypes | str = MetricTypes.COUNTER,
    ) -> None:
        """Declare-and-update in one call, dimensions given as ``Dimension`` objects
        (``ModelName`` and ``Level=Model`` appended when absent)."""
        dims = list(dimensions or [])
        present = {d.name for d in dims}
        defaults = (("ModelName", self.model_name), ("Level", "Model"))
        dims += [Dimension(n, v) for n, v in defaults if n not in present]
        kind = _metric_type(metric_type)
        names = [d.name for d in dims]
        metric = self._cache.get((name, kind))
        if metric is None or metric.dimension_names != names:
            metric = self.add_metric_to_cache(name, unit, names, kind)
        metric.add_or_update(value, [d.value for d in dims], self._request_id(idx))

    def add_time(  # noqa: PLR0917 - TorchServe's positional signature
        self,
        name: str,
        value: float,
        idx: int | str | None = None,
        unit: str = "ms",
        dimensions: Sequence[Dimension] | None = None,
        metric_type: MetricTypes | str = MetricTypes.GAUGE,
    ) -> None:
        """A duration in ``ms`` or ``s``."""
        if unit not in _TIME_UNITS:
            logger.error("[METRICS]Failed to update metric %s: time unit %r is not one of %s",
                         name, unit, _TIME_UNITS)  # fmt: skip
            return
        self.add_metric(name, value, unit, idx, dimensions, metric_type)

    def add_size(  # noqa: PLR0917 - TorchServe's positional signature
        self,
        name: str,
        value: float,
        idx: int | str | None = None,
        unit: str = "MB",
        dimensions: Sequence[Dimension] | None = None,
        metric_type: MetricTypes | str = MetricTypes.GAUGE,
    ) -> None:
        """A size in ``MB``, ``kB``, ``GB`` or ``B``."""
        if unit not in _SIZE_UNITS:
            logger.error("[METRICS]Failed to update metric %s: size unit %r is not one of %s",
                         name, unit, _SIZE_UNITS)  # fmt: skip
            return
        self.add_metric(name, value, unit, idx, dimensions, metric_type)

    def add_percent(
        self,
        name: str,
        value: float,
        idx: int | str | None = None,
        dimensions: Sequence[Dimension] | None = None,
        metric_type: MetricTypes | str = MetricTypes.GAUGE,
    ) -> None:
        """A percentage."""
        self.add_metric(name, value, "percent", idx, dimensions, metric_type)

    def add_counter(
        self,
        name: str,
        value: float,
        idx: int | str | None = None,
        dimensions: Sequence[Dimension] | None = None,
    ) -> None:
        """A count increment."""
        self.add_metric(name, value, "count", idx, dimensions, MetricTypes.COUNTER)
