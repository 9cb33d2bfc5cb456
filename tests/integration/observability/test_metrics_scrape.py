"""/metrics of a real server after real traffic, read with prometheus_client's own parser."""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
import torch
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.server import model_handlers as handlers
from tests.support.models import MLP, save_torchscript
from tests.support.server import ServerOptions, ServerProcess, build_archive, running_server
from torchwick.server.grpc._generated import inference_pb2, inference_pb2_grpc

REQUESTS = 7

CUSTOM = """
from ts.metrics.dimension import Dimension


def handle(data, context):
    if data is None:
        return None
    m = context.metrics
    m.add_counter("CustomCount", 2, None, [Dimension("Colour", "red")])
    m.add_metric("CustomGauge", 5.5, "ms", None, [], "gauge")
    m.add_metric("CustomHistogram", 3.0, "ms", None, [], "histogram")
    m.add_time("CustomTime", 1.5)
    m.add_metric("bad name", 1.0, "count")
    m.add_time("BadUnit", 1.0, None, "hours")
    return [{"ok": True, "traceparent": context.get_request_header(i, "traceparent")}
            for i, _ in enumerate(data)]
"""

PHASES = (
    "torchwick_request_latency_seconds",
    "torchwick_queue_wait_seconds",
    "torchwick_batch_formation_seconds",
    "torchwick_batch_size",
    "torchwick_batch_fill_ratio",
    "torchwick_worker_transfer_seconds",
    "torchwick_handler_preprocess_seconds",
    "torchwick_handler_inference_seconds",
    "torchwick_handler_postprocess_seconds",
    "torchwick_response_encode_seconds",
)
SYSTEM = (
    "CPUUtilization",
    "MemoryUsed",
    "MemoryAvailable",
    "MemoryUtilization",
    "DiskUsage",
    "DiskAvailable",
    "DiskUtilization",
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("scrape")
    store = root / "model_store"
    store.mkdir()
    mlp_dir = root / "mlp_src"
    serialized = save_torchscript(MLP().eval(), mlp_dir, torch.zeros(1, 64))
    build_archive(store, "mlp", handlers.MLP, serialized_file=mlp_dir / serialized)
    build_archive(store, "custom", CUSTOM)
    options = ServerOptions(
        load_models="mlp.mar,custom.mar",
        disable_token_auth=True,
        config={"metric_time_interval": "1"},
    )
    with running_server(root, options) as process:
        yield process


def _scrape(server: ServerProcess) -> dict[str, Metric]:
    text = httpx.get(f"{server.metrics_url}/metrics", timeout=10).text
    return {family.name: family for family in text_string_to_metric_families(text)}


def _value(family: Metric, suffix: str, **labels: str) -> float:
    for sample in family.samples:
        if sample.name == family.name + suffix and all(
            sample.labels.get(k) == v for k, v in labels.items()
        ):
            return float(sample.value)
    raise AssertionError(f"no {family.name}{suffix} sample with {labels}")


def test_phase_histograms_count_every_request(server: ServerProcess) -> None:
    client = server.client("inference")
    for _ in range(REQUESTS):
        response = client.post("/predictions/mlp", json=[0.5] * 64)
        assert response.status_code == 200, response.text
    families = _scrape(server)
    mlp = {"model_name": "mlp", "model_version": "1.0"}
    for name in PHASES:
        family = families[name]
        assert family.type == "histogram", name
        for sample in family.samples:
            if sample.labels.get("model_name") == "mlp":
                assert set(sample.labels) - {"le"} == {"model_name", "model_version", "variant"}
        count = _value(family, "_count", **mlp)
        # Requests went one at a time, so every batch held one request.
        assert count == REQUESTS, (name, count)
        assert _value(family, "_bucket", le="+Inf", **mlp) == REQUESTS
    assert _value(families["torchwick_batch_size"], "_sum", **mlp) == REQUESTS
    assert families["torchwick_queue_depth"].type == "gauge"
    assert _value(families["torchwick_queue_depth"], "", **mlp) == 0
    assert _value(families["torchwick_request_latency_seconds"], "_sum", **mlp) > 0
    total = families["ts_inference_requests"]  # the parser strips ``_total``
    assert _value(total, "_total", model_name="mlp", model_version="default") == REQUESTS
    for name in ("Requests2XX", "Requests4XX", "Requests5XX"):
        assert set(families[name].samples[0].labels) == {"Level", "Hostname"}
    load = families["WorkerLoadTime"]
    assert load.type == "gauge"
    (mlp_load,) = [s for s in load.samples if s.labels["WorkerName"].endswith("-mlp_1.0")]
    assert mlp_load.labels["Level"] == "Host" and mlp_load.value > 0


def test_custom_handler_metrics_of_each_type(server: ServerProcess) -> None:
    client = server.client("inference")
    for _ in range(2):
        assert client.post("/predictions/custom", content=b"x").status_code == 200
    deadline = time.monotonic() + 10
    while True:
        families = _scrape(server)
        if "CustomCount" in families or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    count = families["CustomCount"]
    assert count.type == "counter"
    assert _value(count, "_total", Colour="red", ModelName="custom", Level="Model") >= 4
    assert families["CustomGauge"].type == "gauge"
    assert _value(families["CustomGauge"], "", ModelName="custom") == 5.5
    assert families["CustomHistogram"].type == "summary"
    assert _value(families["CustomHistogram"], "_count", ModelName="custom") >= 2
    assert _value(families["CustomTime"], "", ModelName="custom") == 1.5
    assert not any("bad" in name for name in families)
    # Handlers that are plain functions have no phases: no preprocess samples for them.
    pre = families["torchwick_handler_preprocess_seconds"]
    assert _value(pre, "_count", model_name="custom") == 0
    assert _value(families["torchwick_response_encode_seconds"], "_count", model_name="custom")
    # Reported in the model log by the worker; the requests above still answered 200.
    model_log = server.root / "server" / "logs" / "model_log.log"
    text = _wait_for(model_log, "Failed to update metric 'bad name': not a valid metric name")
    assert "Failed to update metric BadUnit: time unit 'hours'" in text
    assert "BadUnit" not in families
    metrics_log = _wait_for(server.root / "server" / "logs" / "model_metrics.log", "CustomGauge")
    assert "CustomGauge.Milliseconds:5.5|#ModelName:custom,Level:Model|#hostname:" in metrics_log


def test_traceparent_reaches_the_handler(server: ServerProcess) -> None:
    trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    response = server.client("inference").post(
        "/predictions/custom", content=b"x", headers={"traceparent": trace}
    )
    assert response.status_code == 200
    assert json.loads(response.content)["traceparent"] == trace
    # The access log line of that request: its id, the model and version, status and bytes.
    rid = response.headers["x-request-id"]
    line = f"rid={rid} model=custom version=1.0 bytes={len(response.content)}"
    log = _wait_for(server.root / "server" / "logs" / "access_log.log", line)
    assert '"POST /predictions/custom HTTP/1.1" 200 ' in log


def test_traceparent_reaches_the_handler_over_grpc(server: ServerProcess) -> None:
    trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with grpc.insecure_channel(server.grpc_target("inference")) as channel:
        stub = inference_pb2_grpc.InferenceAPIsServiceStub(channel)
        answer = stub.Predictions(
            inference_pb2.PredictionsRequest(model_name="custom", input={"data": b"x"}),
            metadata=[("traceparent", trace)],
            timeout=30,
        )
    assert json.loads(answer.prediction)["traceparent"] == trace


def test_system_metrics_and_worker_memory(server: ServerProcess) -> None:
    deadline = time.monotonic() + 30
    while True:
        families = _scrape(server)
        if "CPUUtilization" in families or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    host = {"Level": "Host"}
    for name in SYSTEM:
        family = families[name]
        assert family.type == "gauge", name
        assert set(family.samples[0].labels) == {"Level", "Hostname"}
        assert _value(family, "", **host) >= 0
    assert 0 < _value(families["MemoryUtilization"], "", **host) <= 100
    log = (server.root / "server" / "logs" / "torchwick_log.log").read_text()
    if importlib.util.find_spec("pynvml") is None:
        # No nvidia-ml-py: no GPU families, and one line saying why.
        assert not [name for name in families if name.startswith("GPU")]
        assert log.count("no GPU metrics: nvidia-ml-py is not installed") == 1
        assert "torchwick_worker_gpu_memory_bytes" not in families
    memory = families["torchwick_worker_memory_bytes"]
    assert _value(memory, "", model_name="mlp", model_version="1.0") > 10_000_000


def _wait_for(path: Path, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        content = path.read_text() if path.exists() else ""
        if text in content or time.monotonic() > deadline:
            assert text in content, content[-2000:]
            return content
        time.sleep(0.05)
