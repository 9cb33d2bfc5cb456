"""Handler metrics: aggregation for /metrics and the model_metrics.log line shape."""

from __future__ import annotations

import asyncio
from pathlib import Path

from torchwick.handlers.messages import MetricRecord
from torchwick.server.observability import ModelMetrics, render_text

DIMS = (("ModelName", "mlp"), ("Level", "Model"))


def test_counters_add_gauges_keep_latest_histograms_summarise() -> None:
    metrics = ModelMetrics("host")
    metrics.record(
        "mlp",
        "1.0",
        [
            MetricRecord("Hits", 2, "Count", "counter", DIMS),
            MetricRecord("Hits", 3, "Count", "counter", DIMS),
            MetricRecord("HandlerTime", 5.0, "ms", "gauge", DIMS),
            MetricRecord("HandlerTime", 7.5, "ms", "gauge", DIMS),
            MetricRecord("Size", 4.0, "MB", "histogram", DIMS),
            MetricRecord("Size", 6.0, "MB", "histogram", DIMS),
        ],
    )
    text = render_text(metrics).decode()
    assert 'Hits{ModelName="mlp",Level="Model",Hostname="host",} 5.0' in text
    assert 'HandlerTime{ModelName="mlp",Level="Model",Hostname="host",} 7.5' in text
    assert 'Size_count{ModelName="mlp",Level="Model",Hostname="host",} 2.0' in text
    assert 'Size_sum{ModelName="mlp",Level="Model",Hostname="host",} 10.0' in text
    assert "# TYPE HandlerTime gauge" in text


def test_metrics_log_lines_have_torchserve_shape(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "model_metrics.log"
    metrics = ModelMetrics("host", path)

    async def run() -> None:
        assert metrics.log is not None
        metrics.log.start(asyncio.get_running_loop())
        metrics.record("mlp", "1.0", [MetricRecord("Hits", 1.0, "Count", "counter", DIMS, "r1")])
        metrics.log.close()

    asyncio.run(run())
    line = path.read_text().strip()
    assert line.startswith("Hits.Count:1.0|#ModelName:mlp,Level:Model|#hostname:host,timestamp:")
    assert line.endswith(",r1")
