"""Frontend counters and their TorchServe-shaped Prometheus text."""

from __future__ import annotations

from dataclasses import dataclass

from torchwick.server.observability.exposition import render_text
from torchwick.server.observability.metrics import FrontendMetrics


@dataclass
class _Stats:
    queue_time_s: float
    pending: int = 0


def test_responses_are_counted_by_class() -> None:
    metrics = FrontendMetrics("host1")
    for status in (200, 201, 404, 401, 500, 503, 302, 101):
        metrics.count_response(status)
    text = render_text(metrics.registry).decode()
    assert 'Requests2XX{Level="Host",Hostname="host1",} 2.0\n' in text
    assert 'Requests4XX{Level="Host",Hostname="host1",} 2.0\n' in text
    # TorchServe counts everything else, 1xx and 3xx included, as 5XX.
    assert 'Requests5XX{Level="Host",Hostname="host1",} 4.0\n' in text
    assert "# HELP Requests2XX Torchserve prometheus counter metric with unit: Count\n" in text
    assert "# TYPE Requests2XX counter\n" in text


def _series(name: str, version: str, value: float) -> str:
    return f'{name}{{model_name="m",model_version="{version}",hostname="h",}} {value}\n'


def test_model_series_use_default_for_unnamed_versions() -> None:
    metrics = FrontendMetrics("h", queue_source=lambda: [("m", "1.0", _Stats(0.0025))])
    metrics.observe_inference("m", None, 120)
    metrics.observe_inference("m", None, 80)
    metrics.observe_inference("m", "2.0", 10)
    text = render_text(metrics.registry).decode()
    assert _series("ts_inference_requests_total", "default", 2.0) in text
    assert _series("ts_inference_requests_total", "2.0", 1.0) in text
    assert _series("ts_inference_latency_microseconds", "default", 200.0) in text
    assert _series("ts_queue_latency_microseconds", "1.0", 2500.0) in text
    metrics.forget_model("m", "2.0")
    assert 'model_version="2.0"' not in render_text(metrics.registry).decode()
    metrics.forget_model("m")
    assert (
        'ts_inference_requests_total{model_name="m"' not in render_text(metrics.registry).decode()
    )


def test_name_filter_keeps_only_the_asked_series() -> None:
    metrics = FrontendMetrics("h")
    metrics.count_response(200)
    text = render_text(metrics.registry, ["Requests2XX"]).decode()
    assert text.startswith("# HELP Requests2XX")
    assert "Requests4XX" not in text and "ts_inference" not in text


def test_label_values_are_escaped() -> None:
    metrics = FrontendMetrics('we"ird\\host\n')
    text = render_text(metrics.registry, ["Requests2XX"]).decode()
    assert 'Hostname="we\\"ird\\\\host\\n",' in text
