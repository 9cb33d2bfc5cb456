"""The gRPC servers as transports: health, reflection, message limits, malformed messages,
TLS, and the servers' behaviour with token authorization and the model API off."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2, empty_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.integration.grpc.grpc_handlers import bearer, code_of
from tests.integration.server import model_handlers as rest_handlers
from tests.support.certs import make_certificate
from tests.support.server import ServerOptions, ServerProcess, build_archive, running_server
from torchwick.server.grpc._generated import (
    inference_pb2,
    inference_pb2_grpc,
    management_pb2,
    management_pb2_grpc,
)

INFERENCE = "org.pytorch.serve.grpc.inference.InferenceAPIsService"
MANAGEMENT = "org.pytorch.serve.grpc.management.ManagementAPIsService"
HEALTH = "grpc.health.v1.Health"
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"
KSERVE = "inference.GRPCInferenceService"


def test_health_is_serving_without_a_key(server: ServerProcess) -> None:
    for api in ("inference", "management"):
        with grpc.insecure_channel(server.grpc_target(api)) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", INFERENCE if api == "inference" else MANAGEMENT):
                answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
                assert answer.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.RpcError) as raised:
                health.Check(health_pb2.HealthCheckRequest(service="no.Such"), timeout=10)
            assert code_of(raised.value) == grpc.StatusCode.NOT_FOUND
            watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            watch.cancel()


def _reflect(channel: grpc.Channel, request: reflection_pb2.ServerReflectionRequest) -> object:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    (answer,) = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
    return answer


def _methods(channel: grpc.Channel, service: str) -> set[str]:
    found = _reflect(
        channel, reflection_pb2.ServerReflectionRequest(file_containing_symbol=service)
    )
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in found.file_descriptor_response.file_descriptor_proto  # type: ignore[attr-defined]
    ]
    return {
        method.name
        for file in files
        for declared in file.service
        if f"{file.package}.{declared.name}" == service
        for method in declared.method
    }


def test_reflection_lists_and_describes_the_services(server: ServerProcess) -> None:
    methods = {
        INFERENCE: {"Ping", "Predictions", "StreamPredictions", "StreamPredictions2"},
        MANAGEMENT: {
            "DescribeModel",
            "ListModels",
            "RegisterModel",
            "ScaleWorker",
            "SetDefault",
            "UnregisterModel",
        },
        # In the private descriptor pool: reflection must look there too.
        KSERVE: {
            "ServerLive",
            "ServerReady",
            "ModelReady",
            "ServerMetadata",
            "ModelMetadata",
            "ModelInfer",
        },
    }
    hosted = {
        "inference": {INFERENCE, KSERVE, HEALTH, REFLECTION},
        "management": {MANAGEMENT, HEALTH, REFLECTION},
    }
    for api, services in hosted.items():
        with grpc.insecure_channel(server.grpc_target(api)) as channel:
            listed = _reflect(channel, reflection_pb2.ServerReflectionRequest(list_services=""))
            names = {s.name for s in listed.list_services_response.service}  # type: ignore[attr-defined]
            assert names == services
            for service in services & methods.keys():
                assert _methods(channel, service) == methods[service]


def test_an_oversized_request_is_resource_exhausted(
    server: ServerProcess, inference_channel: grpc.Channel
) -> None:
    stub = inference_pb2_grpc.InferenceAPIsServiceStub(inference_channel)
    key = bearer(server.keys()["inference"])
    big = b"x" * 6_600_000  # above the default max_request_size of 6553500 bytes
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predictions(
            inference_pb2.PredictionsRequest(model_name="echo", input={"data": big}),
            metadata=key,
            timeout=30,
        )
    assert code_of(raised.value) == grpc.StatusCode.RESOURCE_EXHAUSTED
    answer = stub.Predictions(
        inference_pb2.PredictionsRequest(model_name="echo", input={"data": b"ok"}),
        metadata=key,
        timeout=30,
    )
    assert answer.prediction == b"ok"


def test_a_malformed_message_fails_the_call_and_the_server_stays_up(
    server: ServerProcess, inference_channel: grpc.Channel
) -> None:
    key = bearer(server.keys()["inference"])
    raw = inference_channel.unary_unary(f"/{INFERENCE}/Predictions")
    with pytest.raises(grpc.RpcError) as raised:
        # Field 1 (model_name) as a length-delimited value running past the end.
        raw(b"\x0a\xff\xff\x03abc", metadata=key, timeout=10)
    assert code_of(raised.value) == grpc.StatusCode.INVALID_ARGUMENT
    assert "PredictionsRequest" in raised.value.details()  # type: ignore[attr-defined]
    raw_stream = inference_channel.stream_stream(f"/{INFERENCE}/StreamPredictions2")
    with pytest.raises(grpc.RpcError) as raised:
        list(raw_stream(iter([b"\x0a\xff\xff\x03abc"]), metadata=key, timeout=10))
    assert code_of(raised.value) == grpc.StatusCode.INVALID_ARGUMENT
    stub = inference_pb2_grpc.InferenceAPIsServiceStub(inference_channel)
    assert json.loads(stub.Ping(empty_pb2.Empty(), timeout=10).health) == {"status": "Healthy"}


@pytest.fixture(scope="module")
def open_tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Token authorization off, model API off (the default), gRPC over TLS only, 64 KiB
    request limit, connection ages set."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    root = tmp_path_factory.mktemp("grpc-tls")
    key, cert = make_certificate(root)
    build_archive(root / "model_store", "echo", rest_handlers.ECHO)
    options = ServerOptions(
        disable_token_auth=True,
        load_models="echo.mar",
        config={
            "enable_grpc_ssl": "true",
            "private_key_file": str(key),
            "certificate_file": str(cert),
            "max_request_size": "65536",
            "grpc_inference_max_connection_age_ms": "600000",
            "grpc_inference_max_connection_age_grace_ms": "5000",
            "grpc_management_max_connection_age_ms": "600000",
        },
    )
    with running_server(root, options) as process:
        yield process


def _tls_channel(server: ServerProcess, api: str) -> grpc.Channel:
    cert = Path(server.root / "cert.pem").read_bytes()
    return grpc.secure_channel(server.grpc_target(api), grpc.ssl_channel_credentials(cert))  # type: ignore[arg-type]


def test_tls_serves_trusted_clients_and_refuses_plaintext(open_tls_server: ServerProcess) -> None:
    assert open_tls_server.grpc_urls["inference"].startswith("grpcs://")
    with _tls_channel(open_tls_server, "inference") as channel:
        stub = inference_pb2_grpc.InferenceAPIsServiceStub(channel)
        answer = stub.Predictions(
            inference_pb2.PredictionsRequest(model_name="echo", input={"data": b"tls"}), timeout=30
        )
        assert answer.prediction == b"tls"  # no key: token authorization is off
        big = b"x" * 70_000
        with pytest.raises(grpc.RpcError) as raised:
            stub.Predictions(
                inference_pb2.PredictionsRequest(model_name="echo", input={"data": big}), timeout=30
            )
        assert code_of(raised.value) == grpc.StatusCode.RESOURCE_EXHAUSTED
    with grpc.insecure_channel(open_tls_server.grpc_target("inference")) as plain:
        with pytest.raises(grpc.RpcError) as raised:
            inference_pb2_grpc.InferenceAPIsServiceStub(plain).Ping(empty_pb2.Empty(), timeout=5)
        assert code_of(raised.value) == grpc.StatusCode.UNAVAILABLE


def test_model_api_off_refuses_register_and_unregister(open_tls_server: ServerProcess) -> None:
    with _tls_channel(open_tls_server, "management") as channel:
        stub = management_pb2_grpc.ManagementAPIsServiceStub(channel)
        for call in (
            lambda: stub.RegisterModel(
                management_pb2.RegisterModelRequest(url="echo.mar"), timeout=30
            ),
            lambda: stub.UnregisterModel(
                management_pb2.UnregisterModelRequest(model_name="echo"), timeout=30
            ),
        ):
            with pytest.raises(grpc.RpcError) as raised:
                call()
            assert code_of(raised.value) == grpc.StatusCode.PERMISSION_DENIED
            assert "model API is disabled" in raised.value.details()  # type: ignore[attr-defined]
        listed = json.loads(stub.ListModels(management_pb2.ListModelsRequest(), timeout=30).msg)
        assert [m["modelName"] for m in listed["models"]] == ["echo"]
