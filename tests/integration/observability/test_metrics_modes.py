"""metrics_mode, metrics_config and bad configuration files, on real server processes."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.server import model_handlers as handlers
from tests.support.server import (
    ServerOptions,
    build_archive,
    running_server,
    start_server,
    write_config,
)

METRICS_YAML = """\
dimensions:
  - &model_name "model_name"
  - &level "Level"
ts_metrics:
  counter:
    - name: Requests2XX
      unit: Count
      dimensions: [*level]
    - name: ts_inference_requests_total
      unit: Count
      dimensions: [*model_name]
model_metrics:
  gauge:
    - name: HandlerTime
      unit: ms
      dimensions: [ModelName, Level]
"""


def _scrape(url: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {
        f.name: [(s.name, s.labels, s.value) for s in f.samples]
        for f in text_string_to_metric_families(text)
    }


def _wait_for(path: Path, pattern: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        content = path.read_text() if path.exists() else ""
        if re.search(pattern, content) or time.monotonic() > deadline:
            assert re.search(pattern, content), content[-3000:]
            return content
        time.sleep(0.05)


def test_log_mode_writes_torchserve_lines(tmp_path: Path) -> None:
    build_archive(tmp_path / "model_store", "echo", handlers.ECHO)
    options = ServerOptions(
        load_models="echo.mar",
        disable_token_auth=True,
        config={"metrics_mode": "log", "disable_system_metrics": "true"},
    )
    with running_server(tmp_path, options) as server:
        client = server.client("inference")
        for _ in range(3):
            assert client.post("/predictions/echo", content=b"hi").status_code == 200
        assert _scrape(server.metrics_url) == {}  # TorchServe: /metrics is empty in log mode
        log = tmp_path / "server" / "logs" / "ts_metrics.log"
        host = r"\|#hostname:[^,]+,timestamp:\d+$"
        text = _wait_for(log, r"(?m)^WorkerThreadTime\.Milliseconds:")
        assert re.search(r"(?m)^Requests2XX\.Count:1\.0\|#Level:Host" + host, text)
        lines = re.findall(
            r"(?m)^ts_inference_requests_total\.Count:1\.0"
            r"\|#model_name:echo,model_version:default" + host,
            text,
        )
        assert len(lines) == 3
        assert (
            len(re.findall(r"(?m)^QueueTime\.Milliseconds:[0-9.]+\|#Level:Host" + host, text)) == 3
        )
        assert re.search(r"(?m)^ts_queue_latency_microseconds\.Microseconds:", text)
        worker = r"\|#WorkerName:W-9000-echo_1\.0,Level:Host"
        assert re.search(r"(?m)^WorkerLoadTime\.Milliseconds:[0-9.]+" + worker + host, text)


def test_metrics_config_dimensions_take_effect(tmp_path: Path) -> None:
    build_archive(tmp_path / "model_store", "echo", handlers.ECHO)
    config = tmp_path / "metrics.yaml"
    config.write_text(METRICS_YAML)
    options = ServerOptions(
        load_models="echo.mar",
        disable_token_auth=True,
        config={"metrics_config": str(config), "disable_system_metrics": "true"},
    )
    with running_server(tmp_path, options) as server:
        assert server.client("inference").post("/predictions/echo", content=b"x").status_code == 200
        families = _scrape(server.metrics_url)
    assert [labels for _, labels, _ in families["Requests2XX"]] == [{"Level": "Host"}]
    requests = families["ts_inference_requests"]
    assert requests == [("ts_inference_requests_total", {"model_name": "echo"}, 1.0)]
    # Not in the file's ts_metrics: not exported.
    assert "Requests4XX" not in families
    assert "ts_inference_latency_microseconds" not in families


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("model_metrics:\n  gauge: [\n", r"metrics\.yaml \(line 3\): not valid YAML"),
        (
            METRICS_YAML.replace("dimensions: [*level]", "dimensions: [*level, Colour]"),
            r"metrics\.yaml \(line 6\): ts_metrics Requests2XX: the server has no value for "
            r"dimension Colour",
        ),
        (
            METRICS_YAML.replace("      unit: ms\n", ""),
            r"metrics\.yaml \(line 14\): model_metrics\.gauge\[0\] has no unit",
        ),
    ],
)
def test_malformed_metrics_yaml_fails_at_start(tmp_path: Path, text: str, expected: str) -> None:
    config = tmp_path / "metrics.yaml"
    config.write_text(text)
    options = ServerOptions(config={"metrics_config": str(config)}, start_timeout_s=30)
    with pytest.raises(RuntimeError, match="server exited with 1") as failure:
        start_server(tmp_path, options)
    assert re.search(expected, str(failure.value)), str(failure.value)[-2000:]


def test_malformed_log_config_fails_at_start(tmp_path: Path) -> None:
    config = tmp_path / "logging.yaml"
    config.write_text(
        textwrap.dedent(
            """\
            version: 1
            handlers:
              console:
                class: logging.StreamHandler
                level: NOPE
            """
        )
    )
    (tmp_path / "model_store").mkdir()
    properties = write_config(tmp_path, ServerOptions())
    command = [sys.executable, "-m", "torchwick.server", "--foreground"]
    command += ["--ts-config", str(properties), "--log-config", str(config)]
    result = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"{config} (line 3)" in output, output[-2000:]
    assert "Unable to configure handler 'console'" in output
