"""TorchServe's gRPC management API on a real server: all six RPCs, their error codes, the
management key, and the same answers as the REST API."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest

from tests.integration.grpc.grpc_handlers import bearer, code_of
from tests.integration.server import model_handlers as rest_handlers
from tests.support.server import ServerProcess, build_archive
from torchwick.server.grpc._generated import (
    inference_pb2,
    inference_pb2_grpc,
    management_pb2,
    management_pb2_grpc,
)

Stub = management_pb2_grpc.ManagementAPIsServiceStub


def _key(server: ServerProcess) -> list[tuple[str, str]]:
    return bearer(server.keys()["management"])


def _fails(call: Any, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    assert code_of(raised.value) == code, raised.value
    return str(raised.value.details())  # type: ignore[attr-defined]


def test_describe_and_list_carry_the_rest_json(server: ServerProcess, management: Stub) -> None:
    rest = server.client("management")
    key = _key(server)
    described = management.DescribeModel(
        management_pb2.DescribeModelRequest(model_name="echo"), metadata=key, timeout=30
    )
    assert json.loads(described.msg) == rest.get("/models/echo").json()
    everything = management.DescribeModel(
        management_pb2.DescribeModelRequest(model_name="echo", model_version="all"), metadata=key
    )
    assert json.loads(everything.msg) == rest.get("/models/echo/all").json()
    listed = management.ListModels(management_pb2.ListModelsRequest(), metadata=key)
    assert json.loads(listed.msg) == rest.get("/models").json()
    first = management.ListModels(management_pb2.ListModelsRequest(limit=1), metadata=key)
    page = json.loads(first.msg)
    assert page == rest.get("/models", params={"limit": 1}).json()
    assert page["nextPageToken"] == "1" and len(page["models"]) == 1
    following = management.ListModels(
        management_pb2.ListModelsRequest(limit=1, next_page_token=1), metadata=key
    )
    assert json.loads(following.msg)["models"][0]["modelName"] != page["models"][0]["modelName"]


def test_describe_customized_asks_the_handler(server: ServerProcess, management: Stub) -> None:
    described = management.DescribeModel(
        management_pb2.DescribeModelRequest(model_name="echo", customized=True),
        metadata=_key(server),
        timeout=30,
    )
    (status,) = json.loads(described.msg)
    assert status["modelName"] == "echo" and "customizedMetadata" in status


def test_describe_errors(server: ServerProcess, management: Stub) -> None:
    key = _key(server)
    message = _fails(
        lambda: management.DescribeModel(
            management_pb2.DescribeModelRequest(model_name="missing"), metadata=key
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert "missing" in message
    _fails(
        lambda: management.DescribeModel(
            management_pb2.DescribeModelRequest(model_name="echo", model_version="7"),
            metadata=key,
        ),
        grpc.StatusCode.NOT_FOUND,
    )


def test_register_scale_set_default_unregister(server: ServerProcess, management: Stub) -> None:
    store = server.model_store
    build_archive(store, "lifecycle", rest_handlers.ECHO, version="1.0")
    build_archive(
        store, "lifecycle", rest_handlers.ECHO, version="2.0", archive_name="lifecycle-v2.mar"
    )
    key = _key(server)
    registered = management.RegisterModel(
        management_pb2.RegisterModelRequest(
            url="lifecycle.mar", initial_workers=1, synchronous=True
        ),
        metadata=key,
        timeout=120,
    )
    assert registered.msg == 'Model "lifecycle" Version: 1.0 registered with 1 initial workers'
    message = _fails(
        lambda: management.RegisterModel(
            management_pb2.RegisterModelRequest(url="lifecycle.mar"), metadata=key, timeout=60
        ),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert "lifecycle" in message
    second = management.RegisterModel(
        management_pb2.RegisterModelRequest(url="lifecycle-v2.mar", initial_workers=1),
        metadata=key,
        timeout=120,
    )
    assert second.msg  # asynchronous: TorchServe's "accepted" text
    scaled = management.ScaleWorker(
        management_pb2.ScaleWorkerRequest(
            model_name="lifecycle", model_version="1.0", min_worker=2, synchronous=True
        ),
        metadata=key,
        timeout=120,
    )
    assert scaled.msg == "Workers scaled to 2 for model: lifecycle, version: 1.0"
    rest = server.client("management")
    (described,) = rest.get("/models/lifecycle/1.0").json()
    assert described["minWorkers"] == described["maxWorkers"] == 2
    made_default = management.SetDefault(
        management_pb2.SetDefaultRequest(model_name="lifecycle", model_version="2.0"),
        metadata=key,
    )
    assert made_default.msg == (
        'Default version successfully updated for model "lifecycle" to "2.0"'
    )
    assert rest.get("/models/lifecycle").json()[0]["modelVersion"] == "2.0"
    _fails(
        lambda: management.SetDefault(
            management_pb2.SetDefaultRequest(model_name="lifecycle", model_version="3.0"),
            metadata=key,
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    gone = management.UnregisterModel(
        management_pb2.UnregisterModelRequest(model_name="lifecycle", model_version="1.0"),
        metadata=key,
        timeout=120,
    )
    assert gone.msg == 'Model "lifecycle" unregistered'
    assert [s["modelVersion"] for s in rest.get("/models/lifecycle/all").json()] == ["2.0"]
    management.UnregisterModel(
        management_pb2.UnregisterModelRequest(model_name="lifecycle"), metadata=key, timeout=120
    )
    assert rest.get("/models/lifecycle").status_code == 404


def test_management_errors(server: ServerProcess, management: Stub) -> None:
    key = _key(server)
    message = _fails(
        lambda: management.RegisterModel(management_pb2.RegisterModelRequest(), metadata=key),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "url" in message
    _fails(
        lambda: management.RegisterModel(
            management_pb2.RegisterModelRequest(url="no-such.mar"), metadata=key
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    _fails(
        lambda: management.ScaleWorker(
            management_pb2.ScaleWorkerRequest(model_name="missing"), metadata=key
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    _fails(
        lambda: management.UnregisterModel(
            management_pb2.UnregisterModelRequest(model_name="missing"), metadata=key
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    _fails(
        lambda: management.UnregisterModel(management_pb2.UnregisterModelRequest(), metadata=key),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


def test_management_calls_need_the_management_key(server: ServerProcess, management: Stub) -> None:
    calls = [
        lambda md: management.ListModels(management_pb2.ListModelsRequest(), metadata=md),
        lambda md: management.DescribeModel(
            management_pb2.DescribeModelRequest(model_name="echo"), metadata=md
        ),
        lambda md: management.ScaleWorker(
            management_pb2.ScaleWorkerRequest(model_name="echo"), metadata=md
        ),
    ]
    for metadata in ([], bearer(server.keys()["inference"]), bearer("x" * 32)):
        for call in calls:
            _fails(lambda: call(metadata), grpc.StatusCode.UNAUTHENTICATED)  # noqa: B023


def test_same_model_and_request_give_the_same_answer_over_rest_and_grpc(
    server: ServerProcess, inference_channel: grpc.Channel
) -> None:
    body = json.dumps({"status": 200, "body": "same"}).encode()
    rest = server.client("inference").post("/predictions/status", content=body)
    stub = inference_pb2_grpc.InferenceAPIsServiceStub(inference_channel)
    answer = stub.Predictions(
        inference_pb2.PredictionsRequest(model_name="status", input={"body": body}),
        metadata=bearer(server.keys()["inference"]),
        timeout=30,
    )
    assert rest.status_code == 200
    assert answer.prediction == rest.content == b"same"
    echo = server.client("inference").post("/predictions/echo", files={"data": b"\x00\x01bin"})
    answer = stub.Predictions(
        inference_pb2.PredictionsRequest(model_name="echo", input={"data": b"\x00\x01bin"}),
        metadata=bearer(server.keys()["inference"]),
        timeout=30,
    )
    assert answer.prediction == echo.content == b"\x00\x01bin"
