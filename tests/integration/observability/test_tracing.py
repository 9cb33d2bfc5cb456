"""OpenTelemetry spans per phase from a real server (needs the ``tracing`` extra)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import torch

from tests.integration.server import model_handlers as handlers
from tests.support.models import MLP, save_torchscript
from tests.support.server import ServerOptions, ServerProcess, build_archive, running_server

pytest.importorskip("opentelemetry.sdk.trace")

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
PHASES = {
    "torchwick.inference",
    "torchwick.queue_wait",
    "torchwick.worker",
    "torchwick.preprocess",
    "torchwick.inference_step",
    "torchwick.postprocess",
    "torchwick.encode",
}


def _spans(server: ServerProcess) -> list[dict[str, object]]:
    """The span documents the console exporter printed (pretty JSON objects)."""
    text = server.output.read_text(errors="replace")
    spans = []
    for block in re.findall(r"(?ms)^\{\n.*?^\}$", text):
        try:
            spans.append(json.loads(block))
        except ValueError:
            continue
    return spans


def test_spans_per_phase_continue_the_callers_trace(tmp_path: Path) -> None:
    store = tmp_path / "model_store"
    mlp_dir = tmp_path / "mlp_src"
    serialized = save_torchscript(MLP().eval(), mlp_dir, torch.zeros(1, 64))
    build_archive(store, "mlp", handlers.MLP, serialized_file=mlp_dir / serialized)
    options = ServerOptions(
        load_models="mlp.mar",
        disable_token_auth=True,
        config={"enable_tracing": "true", "disable_system_metrics": "true"},
        env={"OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "100"},
    )
    with running_server(tmp_path, options) as server:
        response = server.client("inference").post(
            "/predictions/mlp",
            json=[0.1] * 64,
            headers={"traceparent": f"00-{TRACE_ID}-{PARENT}-01"},
        )
        assert response.status_code == 200
        deadline = time.monotonic() + 20
        while True:
            spans = [s for s in _spans(server) if TRACE_ID in str(s.get("context"))]
            if {s["name"] for s in spans} >= PHASES or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    names = {str(s["name"]): s for s in spans}
    assert set(names) >= PHASES, sorted(names)
    root = names["torchwick.inference"]
    assert root["parent_id"] == f"0x{PARENT}"
    attributes = root["attributes"]
    assert isinstance(attributes, dict)
    assert attributes["model_name"] == "mlp"
    assert attributes["model_version"] == "1.0"
    assert attributes["http.status_code"] == 200
    root_id = root["context"]["span_id"]  # type: ignore[index]
    worker_id = names["torchwick.worker"]["context"]["span_id"]  # type: ignore[index]
    assert names["torchwick.queue_wait"]["parent_id"] == root_id
    assert names["torchwick.worker"]["parent_id"] == root_id
    assert names["torchwick.preprocess"]["parent_id"] == worker_id
