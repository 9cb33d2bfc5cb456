"""TorchServe's gRPC inference API on a real server: every RPC, its error codes, token
authorization, streaming both ways, and a client cancelling mid-stream."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf import empty_pb2

from tests.integration.grpc.grpc_handlers import bearer, code_of
from tests.support.server import ServerProcess
from torchwick.server.grpc._generated import inference_pb2, inference_pb2_grpc

Stub = inference_pb2_grpc.InferenceAPIsServiceStub
Request = inference_pb2.PredictionsRequest


def _key(server: ServerProcess) -> list[tuple[str, str]]:
    return bearer(server.keys()["inference"])


def test_ping_needs_no_key_and_says_what_rest_ping_says(
    server: ServerProcess, inference: Stub
) -> None:
    answer = inference.Ping(empty_pb2.Empty(), timeout=10)
    rest = server.client("inference").get("/ping")
    assert rest.status_code == 200
    assert json.loads(answer.health) == rest.json() == {"status": "Healthy"}
    assert answer.health == rest.text.rstrip("\n")


def test_predictions_answers_the_handler_output(server: ServerProcess, inference: Stub) -> None:
    answer = inference.Predictions(
        Request(model_name="echo", input={"data": b"hello"}), metadata=_key(server), timeout=30
    )
    assert answer.prediction == b"hello"
    versioned = inference.Predictions(
        Request(model_name="echo", model_version="1.0", input={"data": b"v1"}),
        metadata=_key(server),
        timeout=30,
    )
    assert versioned.prediction == b"v1"


@pytest.mark.parametrize(
    ("request_", "code", "fragment"),
    [
        (Request(model_name="missing", input={"data": b"x"}), grpc.StatusCode.NOT_FOUND, "missing"),
        (
            Request(model_name="echo", model_version="9.9", input={"data": b"x"}),
            grpc.StatusCode.NOT_FOUND,
            "9.9",
        ),
        (Request(input={"data": b"x"}), grpc.StatusCode.INVALID_ARGUMENT, "model_name"),
    ],
    ids=["unknown-model", "unknown-version", "no-model-name"],
)
def test_predictions_errors_use_the_error_table(
    server: ServerProcess, inference: Stub, request_: Request, code: grpc.StatusCode, fragment: str
) -> None:
    with pytest.raises(grpc.RpcError) as unary:
        inference.Predictions(request_, metadata=_key(server), timeout=30)
    with pytest.raises(grpc.RpcError) as streamed:
        list(inference.StreamPredictions(request_, metadata=_key(server), timeout=30))
    for raised in (unary, streamed):
        assert code_of(raised.value) == code
        assert fragment in raised.value.details()  # type: ignore[attr-defined]


def test_inputs_become_parameters_and_metadata_becomes_headers(
    server: ServerProcess, inference: Stub
) -> None:
    answer = inference.Predictions(
        Request(model_name="inspect", input={"data": b"one", "extra": b"two"}),
        metadata=[*_key(server), ("x-trace", "abc")],
        timeout=30,
    )
    seen = json.loads(answer.prediction)
    assert seen["params"] == {
        "data": {"kind": "bytes", "value": "one"},
        "extra": {"kind": "bytes", "value": "two"},
    }
    assert seen["headers"]["x-trace"] == "abc"
    assert "authorization" not in seen["headers"]


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, grpc.StatusCode.INVALID_ARGUMENT),
        (404, grpc.StatusCode.NOT_FOUND),
        (503, grpc.StatusCode.UNAVAILABLE),
        (507, grpc.StatusCode.RESOURCE_EXHAUSTED),
    ],
)
def test_a_handler_status_maps_to_its_grpc_code(
    server: ServerProcess, inference: Stub, status: int, code: grpc.StatusCode
) -> None:
    spec = json.dumps({"status": status, "body": f"handler says {status}"}).encode()
    with pytest.raises(grpc.RpcError) as raised:
        inference.Predictions(
            Request(model_name="status", input={"body": spec}), metadata=_key(server), timeout=30
        )
    assert code_of(raised.value) == code
    assert raised.value.details() == f"handler says {status}"  # type: ignore[attr-defined]


def test_inference_calls_need_the_inference_key(server: ServerProcess, inference: Stub) -> None:
    request = Request(model_name="echo", input={"data": b"x"})
    wrong = [
        [],
        bearer("not-a-key"),
        bearer(server.keys()["management"]),
        [("authorization", server.keys()["inference"])],  # no "Bearer"
    ]
    for metadata in wrong:
        for call in (
            lambda md: inference.Predictions(request, metadata=md, timeout=10),
            lambda md: list(inference.StreamPredictions(request, metadata=md, timeout=10)),
            lambda md: list(inference.StreamPredictions2(iter([request]), metadata=md, timeout=10)),
        ):
            with pytest.raises(grpc.RpcError) as raised:
                call(metadata)
            assert code_of(raised.value) == grpc.StatusCode.UNAUTHENTICATED


def test_stream_predictions_sends_each_intermediate_then_the_final(
    server: ServerProcess, inference: Stub
) -> None:
    answers = list(
        inference.StreamPredictions(
            Request(model_name="stream", input={"data": b"x"}), metadata=_key(server), timeout=30
        )
    )
    assert [a.prediction for a in answers] == [b"hello", b"hello", b"hello", b"hello world "]
    assert not any(a.HasField("sequence_id") for a in answers)


def test_stream_predictions2_answers_each_request_in_order_and_keeps_errors_in_stream(
    server: ServerProcess, inference: Stub
) -> None:
    requests = [
        Request(model_name="ticks", input={"data": b"2:0:a"}, sequence_id="s1"),
        Request(model_name="missing", input={"data": b"x"}, sequence_id="s1"),
        Request(model_name="echo", input={"data": b"plain"}),
        Request(model_name="ticks", input={"data": b"1:0:b"}, sequence_id="s2"),
    ]
    answers = list(inference.StreamPredictions2(iter(requests), metadata=_key(server), timeout=60))
    shown = [
        (a.prediction, a.sequence_id if a.HasField("sequence_id") else None, a.status.code)
        for a in answers
    ]
    assert shown == [
        (b"tick 0", "s1", 0),
        (b"tick 1", "s1", 0),
        (b"final a", "s1", 0),
        (b"", "s1", grpc.StatusCode.NOT_FOUND.value[0]),
        (b"plain", None, 0),
        (b"tick 0", "s2", 0),
        (b"final b", "s2", 0),
    ]
    assert "missing" in answers[3].status.message


def test_stream_predictions2_passes_the_sequence_id_to_the_handler(
    server: ServerProcess, inference: Stub
) -> None:
    request = Request(model_name="inspect", input={"data": b"x"}, sequence_id="seq-7")
    (answer,) = list(inference.StreamPredictions2(iter([request]), metadata=_key(server)))
    assert json.loads(answer.prediction)["headers"]["ts_request_sequence_id"] == "seq-7"
    assert answer.sequence_id == "seq-7"


def _pending(server: ServerProcess, model: str) -> int:
    described = server.client("management").get(f"/models/{model}").json()
    return int(described[0]["jobQueueStatus"]["pendingRequests"])


def _wait_for(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_cancelling_streams_cancels_their_requests(server: ServerProcess, inference: Stub) -> None:
    """A stream cancelled while its request is queued never reaches the worker; one cancelled
    mid-stream ends at once for the client; the worker then serves the next request."""
    log = Path(server.root / "ticks.log")
    key = _key(server)
    running = inference.StreamPredictions(
        Request(model_name="ticks", input={"data": b"5:0.4:running"}), metadata=key, timeout=60
    )
    assert next(running).prediction == b"tick 0"
    queued = inference.StreamPredictions(
        Request(model_name="ticks", input={"data": b"1:0:queued"}), metadata=key, timeout=60
    )
    _wait_for(lambda: _pending(server, "ticks") == 1)
    queued.cancel()
    _wait_for(lambda: _pending(server, "ticks") == 0)
    running.cancel()
    with pytest.raises(grpc.RpcError) as raised:
        list(running)
    assert code_of(raised.value) == grpc.StatusCode.CANCELLED
    after = inference.Predictions(
        Request(model_name="ticks", input={"data": b"0:0:after"}), metadata=key, timeout=60
    )
    assert after.prediction == b"final after"
    served = log.read_text()
    assert "start running" in served and "start after" in served
    assert "queued" not in served


def test_cancelling_a_bidirectional_stream_frees_the_worker(
    server: ServerProcess, inference: Stub
) -> None:
    key = _key(server)
    requests = iter([Request(model_name="ticks", input={"data": b"3:0.2:bidi"})])
    stream = inference.StreamPredictions2(requests, metadata=key, timeout=60)
    assert next(stream).prediction == b"tick 0"
    stream.cancel()
    after = inference.Predictions(
        Request(model_name="ticks", input={"data": b"0:0:after2"}), metadata=key, timeout=60
    )
    assert after.prediction == b"final after2"


def _access_log_with(server: ServerProcess, *texts: str, timeout: float = 15.0) -> list[str]:
    """The access log's lines, once every one of ``texts`` is in some line (polled)."""
    path = server.workdir / "logs" / "access_log.log"
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if all(any(t in line for line in lines) for t in texts) or time.monotonic() > deadline:
            for text in texts:
                assert any(text in line for line in lines), (text, lines[-20:])
            return lines


def test_grpc_calls_are_in_the_access_log(server: ServerProcess, inference: Stub) -> None:
    method = "/org.pytorch.serve.grpc.inference.InferenceAPIsService/Predictions"
    answer = inference.Predictions(
        Request(model_name="echo", input={"data": b"logged"}), metadata=_key(server), timeout=30
    )
    assert answer.prediction == b"logged"
    with pytest.raises(grpc.RpcError):
        inference.Predictions(
            Request(model_name="nosuchmodel", input={"data": b"x"}),
            metadata=_key(server),
            timeout=30,
        )
    with pytest.raises(grpc.RpcError):
        inference.Predictions(Request(model_name="echo", input={"data": b"x"}), timeout=30)
    lines = _access_log_with(server, "grpc=OK", "grpc=NOT_FOUND", "grpc=UNAUTHENTICATED")
    ok = next(line for line in lines if "grpc=OK" in line and method in line)
    assert f'"POST {method} HTTP/2" 200 ' in ok
    assert "model=echo version=1.0 bytes=" in ok and "bytes=0 " not in ok
    missing = next(line for line in lines if "grpc=NOT_FOUND" in line and method in line)
    assert f'"POST {method} HTTP/2" 404 ' in missing
    refused = next(line for line in lines if "grpc=UNAUTHENTICATED" in line and method in line)
    assert f'"POST {method} HTTP/2" 401 ' in refused and "model=- " in refused
