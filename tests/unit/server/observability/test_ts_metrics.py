"""TorchServe's frontend metrics: metrics.yaml ts_metrics, log lines, system metrics."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest

from torchwick.handlers.messages import BatchTimings
from torchwick.handlers.metrics_config import MetricsConfigError, parse_metrics_config
from torchwick.server.observability import render_text
from torchwick.server.observability.metrics import FrontendMetrics
from torchwick.server.observability.system import GpuProbe, SystemMetrics
from torchwick.server.observability.ts_metrics import TsMetricsLog, frontend_specs

YAML = """\
ts_metrics:
  counter:
    - name: Requests2XX
      unit: Count
      dimensions: [Hostname, Level]
model_metrics:
  gauge:
    - {name: HandlerTime, unit: ms, dimensions: [ModelName]}
"""


def test_ts_metrics_choose_names_and_label_order() -> None:
    specs = frontend_specs(parse_metrics_config(YAML, "m.yaml"), "m.yaml")
    metrics = FrontendMetrics("h", specs=specs)
    metrics.count_response(200)
    metrics.count_response(404)
    text = render_text(metrics.registry).decode()
    assert 'Requests2XX{Hostname="h",Level="Host",} 1.0' in text
    assert "Requests4XX" not in text


def test_an_unknown_frontend_dimension_names_the_file_and_line() -> None:
    bad = YAML.replace("[Hostname, Level]", "[Hostname, Colour]")
    with pytest.raises(MetricsConfigError, match=r"^m\.yaml \(line 3\): ts_metrics Requests2XX"):
        frontend_specs(parse_metrics_config(bad, "m.yaml"), "m.yaml")


async def test_log_lines_have_torchserve_shape(tmp_path: Path) -> None:
    path = tmp_path / "ts_metrics.log"
    log = TsMetricsLog(path, "myhost", frontend_specs(None))
    metrics = FrontendMetrics("myhost", mode="log", ts_log=log)
    log.file.start(asyncio.get_running_loop())
    metrics.count_response(200)
    metrics.observe_inference("m", None, 1500)
    series = metrics.series("m", "1.0")
    assert series is not None
    series.queue_wait(0.002)
    series.worker_timings(BatchTimings(worker=0.001), 0.0015)
    log.file.close()
    lines = path.read_text().splitlines()
    tail = r"\|#hostname:myhost,timestamp:\d+"
    expected = [
        r"Requests2XX\.Count:1\.0\|#Level:Host" + tail,
        r"ts_inference_requests_total\.Count:1\.0\|#model_name:m,model_version:default" + tail,
        r"ts_inference_latency_microseconds\.Microseconds:1500\.0\|#model_name:m,"
        r"model_version:default" + tail,
        r"QueueTime\.Milliseconds:2\.0\|#Level:Host" + tail,
        r"ts_queue_latency_microseconds\.Microseconds:2000\.0\|#model_name:m,model_version:1\.0"
        + tail,
        r"WorkerThreadTime\.Milliseconds:0\.5\|#Level:Host" + tail,
    ]
    assert len(lines) == len(expected)
    for line, pattern in zip(lines, expected, strict=True):
        assert re.fullmatch(pattern, line), line


def test_system_sample_reads_proc_and_skips_gpu_without_nvml() -> None:
    probe = GpuProbe()
    system = SystemMetrics("h", frontend_specs(None), interval_s=60, enabled=True, gpu=probe)
    latest = system.sample()
    deadline = time.monotonic() + 10
    # CPU utilisation needs the jiffy counters to move between two samples (10 ms steps).
    while ("CPUUtilization", "") not in latest and time.monotonic() < deadline:
        latest = system.sample()
    names = {name for name, _ in latest}
    assert {"MemoryUsed", "MemoryUtilization", "DiskAvailable", "CPUUtilization"} <= names
    text = render_text(system).decode()
    assert 'MemoryUtilization{Level="Host",Hostname="h",}' in text
    if probe.nvml is None:
        assert probe.reason
        assert not [n for n in names if n.startswith("GPU")]
