"""Observability: Prometheus counters, handler metrics, the access log and the server log."""

from .access_log import AccessLog
from .exposition import CONTENT_TYPE as PROMETHEUS_CONTENT_TYPE
from .exposition import render_text
from .logs import ACCESS_LOG_FILE, SERVER_LOG_FILE, install_server_log, remove_server_log
from .metrics import FrontendMetrics, ModelCounters
from .model_metrics import MODEL_METRICS_FILE, ModelMetrics
from .setup import build_frontend_metrics
from .system import SystemMetrics

__all__ = [
    "ACCESS_LOG_FILE",
    "MODEL_METRICS_FILE",
    "PROMETHEUS_CONTENT_TYPE",
    "SERVER_LOG_FILE",
    "AccessLog",
    "FrontendMetrics",
    "ModelCounters",
    "ModelMetrics",
    "SystemMetrics",
    "build_frontend_metrics",
    "install_server_log",
    "remove_server_log",
    "render_text",
]
