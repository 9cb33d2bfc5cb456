"""TorchServe's ``metrics_config`` file (``metrics.yaml``) and pre-registering its metrics.

Layout (as TorchServe 0.12 reads it; YAML anchors such as ``&model_name "ModelName"`` work)::

    dimensions: [ModelName, Level, ...]        # names, usually anchored for reuse
    ts_metrics:                                # frontend metrics (parsed and checked only)
      counter: [{name: Requests2XX, unit: Count, dimensions: [Level, Hostname]}, ...]
      gauge: [...]
      histogram: [...]
    model_metrics:                             # handler metrics: pre-registered in the worker
      counter: [{name: InferenceRequestCount, unit: count, dimensions: []}, ...]
      gauge: [...]
      histogram: [...]

``preregister(cache, config)`` adds every ``model_metrics`` entry to ``context.metrics`` with
exactly its dimension names, so ``context.metrics.get_metric(name, type)`` finds it before the
handler declared it. Without a file, TorchServe's default file applies: the gauges
``HandlerTime`` and ``PredictionTime`` (unit ``ms``, dimensions ``ModelName``, ``Level``).

Failure mode: ``MetricsConfigError`` naming the file and what is wrong (unreadable file, YAML
syntax error with its line, no ``model_metrics`` section, an unknown metric type, an entry
without ``name``/``unit``/``dimensions``, dimension names that are not text).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .metrics import MetricsCache, MetricTypes


class MetricsConfigError(ValueError):
    """The metrics configuration file cannot be used; the message names the file (and the
    line, where the problem is inside it)."""


class _Lined(dict[Any, Any]):
    """A YAML mapping that remembers the line it started on (for error messages)."""

    line = 0


if TYPE_CHECKING:
    import yaml


@functools.cache
def _line_loader() -> type[yaml.SafeLoader]:
    """``yaml.SafeLoader`` whose mappings are ``_Lined``; built on first use, so that the
    server does not import yaml at start-up when no metrics file is configured."""
    import yaml

    class LineLoader(yaml.SafeLoader):
        pass

    def construct_lined(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Any:
        data = _Lined()
        data.line = node.start_mark.line + 1
        yield data
        data.update(loader.construct_mapping(node))

    LineLoader.add_constructor("tag:yaml.org,2002:map", construct_lined)
    return LineLoader


def _at(source: str, value: Any) -> str:
    """``file`` or ``file (line N)`` for a value read from it."""
    line = getattr(value, "line", 0)
    return f"{source} (line {line})" if line else source


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One declared metric."""

    name: str
    unit: str | None
    dimensions: tuple[str, ...]
    metric_type: MetricTypes
    #: Where it is declared in its file (0: not from a file).
    line: int = 0


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """The parsed file: dimension names, frontend metrics and model (handler) metrics."""

    dimensions: tuple[str, ...]
    ts_metrics: tuple[MetricSpec, ...]
    model_metrics: tuple[MetricSpec, ...]


DEFAULT_CONFIG = MetricsConfig(
    dimensions=("ModelName", "Level"),
    ts_metrics=(),
    model_metrics=(
        MetricSpec("HandlerTime", "ms", ("ModelName", "Level"), MetricTypes.GAUGE),
        MetricSpec("PredictionTime", "ms", ("ModelName", "Level"), MetricTypes.GAUGE),
    ),
)


def _names(value: Any, where: str, source: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MetricsConfigError(f"{source}: {where} must be a list of dimension names")
    return tuple(value)


def _section(value: Any, key: str, source: str) -> tuple[MetricSpec, ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise MetricsConfigError(f"{source}: '{key}' must map metric types to lists")
    parent = value
    specs: list[MetricSpec] = []
    for type_name, entries in value.items():
        try:
            kind = MetricTypes(str(type_name))
        except ValueError:
            raise MetricsConfigError(
                f"{_at(source, parent)}: {key}.{type_name}: unknown metric type "
                "(use counter, gauge or histogram)"
            ) from None
        if not isinstance(entries, list):
            raise MetricsConfigError(f"{_at(source, parent)}: {key}.{type_name} must be a list")
        for index, entry in enumerate(entries):
            where = f"{key}.{type_name}[{index}]"
            if not isinstance(entry, dict):
                raise MetricsConfigError(f"{_at(source, parent)}: {where} must be a mapping")
            here = _at(source, entry)
            missing = [k for k in ("name", "unit", "dimensions") if k not in entry]
            if missing:
                raise MetricsConfigError(f"{here}: {where} has no {', '.join(missing)}")
            name, unit = entry["name"], entry["unit"]
            if not isinstance(name, str) or not name.strip():
                raise MetricsConfigError(f"{here}: {where}.name must be non-empty text")
            if unit is not None and not isinstance(unit, str):
                raise MetricsConfigError(f"{here}: {where}.unit must be text")
            dims = _names(entry["dimensions"], f"{where}.dimensions", here)
            specs.append(MetricSpec(name, unit, dims, kind, getattr(entry, "line", 0)))
    return tuple(specs)


def parse_metrics_config(text: str, source: str) -> MetricsConfig:
    """Parse the YAML ``text`` of the file called ``source`` (used in error messages)."""
    import yaml

    try:
        raw = yaml.load(text, Loader=_line_loader())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise MetricsConfigError(f"{source}{line}: not valid YAML: {problem}") from None
    if not isinstance(raw, dict):
        raise MetricsConfigError(f"{source}: expected a mapping at the top level")
    model_metrics = _section(raw.get("model_metrics"), "model_metrics", source)
    if not model_metrics:
        # TorchServe's worker refuses such a file too ("Missing `model_metrics`").
        raise MetricsConfigError(f"{source}: no metrics under 'model_metrics'")
    return MetricsConfig(
        dimensions=_names(raw.get("dimensions"), "dimensions", source),
        ts_metrics=_section(raw.get("ts_metrics"), "ts_metrics", source),
        model_metrics=model_metrics,
    )


def load_metrics_config(path: str | Path | None) -> MetricsConfig:
    """The file at ``path``, or TorchServe's default model metrics when ``path`` is None."""
    if path is None or str(path) == "":
        return DEFAULT_CONFIG
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MetricsConfigError(f"{path}: cannot read the metrics configuration: {exc}") from None
    return parse_metrics_config(text, str(path))


def preregister(cache: MetricsCache, config: MetricsConfig) -> None:
    """Declare every model metric of ``config`` in ``cache`` (nothing is emitted)."""
    for spec in config.model_metrics:
        cache.add_metric_to_cache(spec.name, spec.unit, list(spec.dimensions), spec.metric_type)
