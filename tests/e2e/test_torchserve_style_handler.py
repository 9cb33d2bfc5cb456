"""Handlers written TorchServe-style, archived and served unmodified by a real server.

The handler sources live in ``tests/e2e/handlers/``; they import ``ts.*`` exactly as a
TorchServe 0.12 user's handler does (no ``ts`` package is installed: the worker resolves those
imports to torchwick). One server for the module, secure defaults (token authorization on,
model API off), ``load_models=all`` over archives built here with ``archive_model``:

* ``custom``: a ``BaseHandler`` subclass loading an eager model, reading ``system_properties``
  and the manifest, setting per-request status, content type and headers, raising
  ``PredictionException(..., 418)`` and adding a custom metric;
* ``digits``: a subclass of ``ts.torch_handler.image_classifier.ImageClassifier`` with its
  own ``image_processing`` and ``postprocess``;
* ``echo`` / ``shout``: module-level ``handle(data, context)`` and ``file.py:function``;
* ``stream``: ``send_intermediate_predict_response`` -> a chunked HTTP response.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from tests.support.images import image_bytes
from tests.support.models import MLP, SmallCNN, save_eager
from tests.support.server import ServerOptions, ServerProcess, start_server
from torchwick.archiver import archive_model

HANDLERS = Path(__file__).parent / "handlers"
#: Every request and every wait in this module is bounded by this (seconds).
REQUEST_TIMEOUT_S = 60.0
BATCH_SIZE = 4


@dataclass
class Served:
    server: ServerProcess
    mlp: MLP
    cnn: SmallCNN


def _config(directory: Path, **extra: Any) -> Path:
    path = directory / "model-config.yaml"
    settings = {"minWorkers": 1, "maxWorkers": 1, "batchSize": BATCH_SIZE, "maxBatchDelay": 200}
    path.write_text(yaml.safe_dump({**settings, **extra}))
    return path


def _build_store(store: Path, sources: Path) -> tuple[MLP, SmallCNN]:
    torch.manual_seed(0)
    mlp, cnn = MLP().eval(), SmallCNN().eval()

    custom = sources / "custom"
    model_file, weights = save_eager(mlp, custom)
    (custom / "settings.json").write_text(json.dumps({"greeting": "bonjour"}))
    archive_model(
        model_name="custom",
        version="2.5",
        handler=str(HANDLERS / "ts_style_handler.py"),
        model_file=custom / model_file,
        serialized_file=custom / weights,
        extra_files=[custom / "settings.json"],
        config_file=_config(custom),
        export_path=store,
    )

    digits = sources / "digits"
    model_file, weights = save_eager(cnn, digits)
    archive_model(
        model_name="digits",
        version="1.0",
        handler=str(HANDLERS / "ts_image_subclass.py"),
        model_file=digits / model_file,
        serialized_file=digits / weights,
        config_file=_config(digits),
        export_path=store,
    )

    functions = sources / "functions"
    functions.mkdir(parents=True)
    handler_file = HANDLERS / "ts_function_handler.py"
    for name, handler in (("echo", str(handler_file)), ("shout", f"{handler_file}:shout")):
        archive_model(
            model_name=name,
            version="1.0",
            handler=handler,
            config_file=_config(functions),
            export_path=store,
        )

    streaming = sources / "stream"
    streaming.mkdir(parents=True)
    archive_model(
        model_name="stream",
        version="1.0",
        handler=str(HANDLERS / "ts_streaming_handler.py"),
        config_file=_config(streaming, batchSize=1),
        export_path=store,
    )
    return mlp, cnn


@pytest.fixture(scope="module")
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("ts_style")
    mlp, cnn = _build_store(root / "model_store", root / "sources")
    server = start_server(root, ServerOptions(load_models="all", start_timeout_s=120))
    failed_before = request.session.testsfailed
    try:
        yield Served(server, mlp, cnn)
    finally:
        server.stop()
        if request.session.testsfailed > failed_before:
            print(f"===== torchwick server output =====\n{server.logs()}", file=sys.stderr)


def _client(served: Served) -> httpx.Client:
    return served.server.client("inference", timeout=REQUEST_TIMEOUT_S)


def _sample(seed: int) -> list[float]:
    generator = torch.Generator().manual_seed(seed)
    values: list[float] = torch.randn(64, generator=generator).tolist()
    return values


def _scores(mlp: MLP, sample: Sequence[float]) -> list[float]:
    with torch.no_grad():
        scores: list[float] = mlp(torch.tensor([sample]))[0].tolist()
    return scores


# BaseHandler subclass ----------------------------------------------------------------------


def test_custom_handler_status_headers_and_content_type(served: Served) -> None:
    client = _client(served)
    sample = _sample(1)
    want = _scores(served.mlp, sample)

    reply = client.post("/predictions/custom", json={"x": sample}, headers={"X-Client-Tag": "t1"})
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert body["scores"] == pytest.approx(want, abs=1e-4)
    assert body["argmax"] == int(np.argmax(want))
    # system_properties, manifest and request context reached the handler.
    assert reply.headers["x-model"] == "custom/2.5"
    assert reply.headers["x-configured-batch-size"] == str(BATCH_SIZE)
    if not torch.cuda.is_available():
        assert reply.headers["x-gpu-id"] == "None" and reply.headers["x-device"] == "cpu"
    assert reply.headers["x-client-tag-echo"] == "t1"
    assert reply.headers["x-handler-request-id"] == reply.headers["x-request-id"]

    # Plain text chosen by the handler, with the extra file's content.
    text = client.post("/predictions/custom", json={"x": sample, "format": "text"})
    assert text.status_code == 200
    assert text.headers["content-type"] == "text/plain; charset=utf-8"
    assert text.text == f"bonjour: class {int(np.argmax(want))}"

    # A status chosen by the handler.
    created = client.post("/predictions/custom", json={"x": sample, "created": True})
    assert created.status_code == 201, created.text
    assert created.json()["argmax"] == int(np.argmax(want))

    # The version route answers the same.
    versioned = client.post("/predictions/custom/2.5", json={"x": sample})
    assert versioned.status_code == 200
    assert versioned.json()["scores"] == pytest.approx(body["scores"])


def test_custom_handler_prediction_exception_and_crash(served: Served) -> None:
    client = _client(served)
    teapot = client.post("/predictions/custom", json={"x": _sample(2), "teapot": True})
    assert teapot.status_code == 418, teapot.text
    assert teapot.headers["content-type"].startswith("application/json")
    assert teapot.json() == {
        "code": 418,
        "type": "InternalServerException",
        "message": "I'm short and stout",
    }

    crash = client.post("/predictions/custom", json={"x": _sample(2), "explode": True})
    assert crash.status_code == 500, crash.text
    assert crash.json()["message"] == "Prediction failed"

    # The worker survived both and still answers correctly.
    after = client.post("/predictions/custom", json={"x": _sample(3)})
    assert after.status_code == 200
    assert after.json()["scores"] == pytest.approx(_scores(served.mlp, _sample(3)), abs=1e-4)
    assert client.get("/ping").json() == {"status": "Healthy"}
    assert "the handler blew up" in served.server.logs()


def test_custom_handler_batches_concurrent_requests(served: Served) -> None:
    """While one request holds the worker, the next ``BATCH_SIZE`` queue up and run as one
    batch; each still gets its own status, content type, headers and answer, and the bad
    one alone is answered 400 (a status the handler set for that request only)."""
    server = served.server
    samples = [_sample(10 + i) for i in range(BATCH_SIZE)]
    payloads: list[dict[str, Any]] = [{"x": sample} for sample in samples]
    payloads[1]["format"] = "text"
    payloads[2] = {"x": [1.0, 2.0]}  # bad input

    async def run() -> tuple[httpx.Response, list[httpx.Response]]:
        async with server.async_client("inference", timeout=REQUEST_TIMEOUT_S) as client:
            holder = asyncio.create_task(
                client.post("/predictions/custom", json={"x": _sample(9), "hold": 2.0})
            )
            await asyncio.sleep(0.5)  # the holder is in the worker now
            batch = [
                client.post("/predictions/custom", json=payload, headers={"X-Client-Tag": f"t{i}"})
                for i, payload in enumerate(payloads)
            ]
            replies = await asyncio.gather(*batch)
            return await holder, list(replies)

    first, replies = asyncio.run(asyncio.wait_for(run(), REQUEST_TIMEOUT_S))
    assert first.status_code == 200 and first.headers["x-batch-size"] == "1"
    assert [r.status_code for r in replies] == [200, 200, 400, 200]
    assert [r.headers["x-batch-size"] for r in replies] == [str(BATCH_SIZE)] * BATCH_SIZE
    for i, reply in enumerate(replies):
        assert reply.headers["x-client-tag-echo"] == f"t{i}"
    want = [_scores(served.mlp, sample) for sample in samples]
    assert replies[0].headers["content-type"] == "application/json"
    assert replies[0].json()["scores"] == pytest.approx(want[0], abs=1e-4)
    assert replies[1].headers["content-type"] == "text/plain; charset=utf-8"
    assert replies[1].text == f"bonjour: class {int(np.argmax(want[1]))}"
    assert replies[2].headers["content-type"] == "application/json"
    assert replies[2].json() == {"error": "x must be a list of 64 numbers"}
    assert replies[3].json()["scores"] == pytest.approx(want[3], abs=1e-4)
    ids = {r.headers["x-handler-request-id"] for r in replies}
    assert ids == {r.headers["x-request-id"] for r in replies} and len(ids) == BATCH_SIZE


def test_handler_metrics_reach_prometheus_and_the_metrics_log(served: Served) -> None:
    # The reason phrase a handler sets is not sent (ASGI has no field for it; documented in
    # docs/api.md), but the status is; handler metrics must be visible to operators.
    client = _client(served)
    for i in range(3):
        assert client.post("/predictions/custom", json={"x": _sample(20 + i)}).status_code == 200
    metrics = served.server.client("metrics")
    deadline = time.monotonic() + REQUEST_TIMEOUT_S
    text = ""
    while time.monotonic() < deadline:
        text = metrics.get("/metrics").text
        if "TsStyleRequests{" in text and "HandlerTime{" in text:
            break
        time.sleep(0.1)
    assert 'TsStyleRequests{ModelName="custom",Level="Model",Hostname=' in text, text
    assert "PredictionTime{" in text
    log_file = served.server.workdir / "logs" / "model_metrics.log"
    while time.monotonic() < deadline and "TsStyleRequests.Count:" not in _read(log_file):
        time.sleep(0.2)
    assert "TsStyleRequests.Count:" in _read(log_file)


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


# ImageClassifier subclass ------------------------------------------------------------------


def test_image_classifier_subclass_with_own_postprocess(served: Served) -> None:
    client = _client(served)
    images = [image_bytes(40, 30, "PNG", seed=s) for s in range(3)]
    expected = []
    for raw in images:
        with Image.open(io.BytesIO(raw)) as opened:
            small = opened.convert("RGB").resize((32, 32), Image.Resampling.BILINEAR)
        array = np.asarray(small, dtype=np.float32) / 255.0
        tensor = torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)
        with torch.no_grad():
            expected.append(int(served.cnn(tensor).argmax(1)))
    for raw, want in zip(images, expected, strict=True):
        reply = client.post("/predictions/digits", content=raw)
        assert reply.status_code == 200, reply.text
        assert "content-type" not in reply.headers  # none set by the handler, as in TorchServe
        assert reply.content == str(want).encode()
    # The inherited per-request validation still applies.
    bad = client.post("/predictions/digits", content=b"not a png")
    assert bad.status_code == 400 and "decodable image" in bad.json()["message"]


# Module-level entry points ------------------------------------------------------------------


def test_module_level_handle_and_named_function(served: Served) -> None:
    client = _client(served)
    echo = client.post(
        "/predictions/echo", content="hi there", headers={"Content-Type": "text/plain"}
    )
    assert echo.status_code == 200, echo.text
    # A dict comes back as TorchServe writes it: json.dumps(indent=2), no Content-Type.
    assert echo.text == json.dumps(
        {"echo": "hi there", "entry": "handle", "archived": True}, indent=2
    )
    assert "content-type" not in echo.headers

    shout = client.post("/predictions/shout", content=b"quiet please")
    assert shout.status_code == 200, shout.text
    assert shout.text == "QUIET PLEASE!"
    assert shout.headers["content-type"] == "text/plain"
    assert shout.headers["x-entry"] == "shout"


# Streaming -----------------------------------------------------------------------------------


def test_intermediate_responses_stream_as_chunks(served: Served) -> None:
    client = _client(served)
    chunks: list[tuple[float, bytes]] = []
    with client.stream("POST", "/predictions/stream", content=b"go") as reply:
        assert reply.status_code == 200
        assert reply.headers["transfer-encoding"] == "chunked"
        for chunk in reply.iter_raw():
            chunks.append((time.monotonic(), chunk))
    body = b"".join(chunk for _, chunk in chunks)
    assert body == b"hellohellohellohello world "
    # The parts arrived as they were sent (~0.2 s apart), not all at the end.
    assert len(chunks) >= 2 and chunks[0][1].startswith(b"hello")
    assert chunks[-1][0] - chunks[0][0] > 0.2

    # Without streaming the client sees the same body in one piece.
    whole = client.post("/predictions/stream", content=b"go")
    assert whole.status_code == 200 and whole.content == body


# GPU ------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_worker_gets_a_gpu(served: Served) -> None:
    reply = _client(served).post("/predictions/custom", json={"x": _sample(4)})
    assert reply.status_code == 200
    gpu_id = reply.headers["x-gpu-id"]
    assert gpu_id.isdigit() and reply.headers["x-device"] == f"cuda:{gpu_id}"
    assert reply.json()["scores"] == pytest.approx(_scores(served.mlp, _sample(4)), abs=1e-3)
