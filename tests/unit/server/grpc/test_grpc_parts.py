"""The gRPC adapter's pure parts: server options from settings, key kinds per method, status
mapping of handler answers, and descriptor lookups across both pools for reflection."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pool

from torchwick.server.contracts import InferenceResult
from torchwick.server.grpc._generated import grpc_predict_v2_pb2
from torchwick.server.grpc.auth import TokenInterceptor
from torchwick.server.grpc.health import ChainedPool
from torchwick.server.grpc.inference import health_text
from torchwick.server.grpc.server import bind_target, server_options
from torchwick.server.grpc.status import MAX_DETAILS_CHARS, result_error
from torchwick.server.settings import Settings


class _NoTokens:
    def check(self, kind: str, header: str | None) -> None:
        raise AssertionError("not called in these tests")


def test_server_options_carry_the_size_limits_and_connection_ages() -> None:
    plain = dict(server_options(Settings(max_request_size=10, max_response_size=20), "inference"))
    assert plain == {
        "grpc.max_receive_message_length": 10,
        "grpc.max_send_message_length": 20,
        "grpc.so_reuseport": 0,
        "grpc.max_concurrent_streams": 100,
        "grpc.max_connection_idle_ms": 300_000,
        "grpc.max_metadata_size": 16384,
        "grpc.absolute_max_metadata_size": 16384,
    }
    aged = dict(
        server_options(
            Settings(
                grpc_management_max_connection_age_ms=5000,
                grpc_management_max_connection_age_grace_ms=100,
                grpc_inference_max_connection_age_ms=7,
            ),
            "management",
        )
    )
    assert aged["grpc.max_connection_age_ms"] == 5000
    assert aged["grpc.max_connection_age_grace_ms"] == 100


@pytest.mark.parametrize(
    ("host", "target"),
    [("127.0.0.1", "127.0.0.1:7070"), ("::1", "[::1]:7070"), ("localhost", "localhost:7070")],
)
def test_bind_target(host: str, target: str) -> None:
    assert bind_target(host, 7070) == target


@pytest.mark.parametrize(
    ("method", "kind"),
    [
        ("/org.pytorch.serve.grpc.inference.InferenceAPIsService/Predictions", "inference"),
        ("/org.pytorch.serve.grpc.inference.InferenceAPIsService/Ping", None),
        ("/org.pytorch.serve.grpc.management.ManagementAPIsService/ListModels", "management"),
        ("/inference.GRPCInferenceService/ModelInfer", "inference"),
        ("/grpc.health.v1.Health/Check", None),
        ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", None),
    ],
)
def test_key_kind_per_method(method: str, kind: str | None) -> None:
    assert TokenInterceptor(_NoTokens(), "inference").kind_for(method) == kind


def _result(status: int, body: bytes = b"", reason: str = "") -> InferenceResult:
    return InferenceResult("id", "m", "1", status=status, body=body, reason=reason)


def test_a_handler_status_maps_through_the_error_table() -> None:
    assert result_error(_result(200, b"fine")) is None
    assert result_error(_result(204)) is None
    assert result_error(_result(400, b"bad x")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "bad x",
        "BadRequestException",
    )
    code, details, _ = result_error(_result(503, reason="busy"))  # type: ignore[misc]
    assert (code, details) == (grpc.StatusCode.UNAVAILABLE, "busy")
    code, details, _ = result_error(_result(418, b"x" * (MAX_DETAILS_CHARS + 10)))  # type: ignore[misc]
    assert code == grpc.StatusCode.INVALID_ARGUMENT and len(details) == MAX_DETAILS_CHARS


def test_health_text_is_the_rest_ping_document() -> None:
    assert health_text(True) == '{\n  "status": "Healthy"\n}'
    assert health_text(False) == '{\n  "status": "Unhealthy"\n}'


def test_chained_pool_finds_symbols_in_the_private_pool_and_the_default_one() -> None:
    pool = ChainedPool(grpc_predict_v2_pb2.POOL, descriptor_pool.Default())
    kserve = pool.FindFileContainingSymbol("inference.GRPCInferenceService")
    assert kserve.name.endswith("grpc_predict_v2.proto")
    # Imported for its registration in the default pool.
    from torchwick.server.grpc._generated import inference_pb2  # noqa: F401

    torchserve = pool.FindFileContainingSymbol(
        "org.pytorch.serve.grpc.inference.InferenceAPIsService"
    )
    assert torchserve.name.endswith("inference.proto")
    assert pool.FindMessageTypeByName("inference.ModelInferRequest").name == "ModelInferRequest"
    with pytest.raises(KeyError):
        pool.FindFileContainingSymbol("no.such.Thing")
