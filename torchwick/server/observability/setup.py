"""Builds the frontend metrics from ``Settings`` (``metrics_mode``, ``metrics_config``,
``metrics_histogram_buckets``, ``metrics_location``)."""

from __future__ import annotations

from torchwick.handlers.metrics_config import load_metrics_config
from torchwick.server.settings import Settings

from .metrics import FrontendMetrics
from .ts_metrics import TS_METRICS_FILE, TsMetricsLog, frontend_specs

#: Exported to Prometheus in ``legacy`` mode; every other frontend metric is logged there.
LEGACY_PROMETHEUS = frozenset({
    "ts_inference_requests_total",
    "ts_inference_latency_microseconds",
    "ts_queue_latency_microseconds",
})  # fmt: skip


def build_frontend_metrics(settings: Settings, hostname: str) -> FrontendMetrics:
    """The server's ``FrontendMetrics``; raises ``MetricsConfigError`` (file, line, what is
    wrong) for a ``metrics_config`` file that cannot be used."""
    config = None
    if settings.metrics_config is not None:
        config = load_metrics_config(settings.metrics_config)
    specs = frontend_specs(config, str(settings.metrics_config or ""))
    ts_log = None
    if settings.metrics_mode in {"log", "legacy"}:
        logged = {
            name: spec
            for name, spec in specs.items()
            if settings.metrics_mode == "log" or name not in LEGACY_PROMETHEUS
        }
        path = settings.metrics_location / TS_METRICS_FILE
        ts_log = TsMetricsLog(path, hostname, logged)
    return FrontendMetrics(
        hostname,
        mode=settings.metrics_mode,
        latency_buckets=settings.metrics_histogram_buckets,
        specs=specs,
        ts_log=ts_log,
    )
