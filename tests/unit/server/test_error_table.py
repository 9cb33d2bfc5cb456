"""The one error table: every typed error, answered the same way by every adapter."""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import grpc
import pytest
from starlette.testclient import TestClient

import torchwick.server.errors as errors_module
from torchwick.server.api.assembly import RestApis
from torchwick.server.contracts import InferenceRequest, InferenceResult
from torchwick.server.errors import (
    ERROR_TABLE,
    InvalidTensor,
    TorchwickError,
    UnknownOutput,
    error_class_for_http,
    grpc_code_for_http,
    status_for_http,
)
from torchwick.server.observability.metrics import FrontendMetrics
from torchwick.server.settings import Settings

from .api.fakes import FakePlane

ALL_ERRORS = [
    cls
    for _, cls in inspect.getmembers(errors_module, inspect.isclass)
    if issubclass(cls, TorchwickError)
]


def _make(cls: type[TorchwickError]) -> TorchwickError:
    if cls is InvalidTensor:
        return InvalidTensor("input__0", "shape [2] does not match 3 elements")
    if cls is UnknownOutput:
        return UnknownOutput("logits", ("probs",))
    return cls(f"a {cls.__name__}")


def test_every_error_type_is_in_the_table() -> None:
    assert set(ALL_ERRORS) == set(ERROR_TABLE)


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda c: c.__name__)
def test_each_mapping_is_a_real_status_and_grpc_code(cls: type[TorchwickError]) -> None:
    status = _make(cls).status
    assert 400 <= status.http_status <= 599
    assert status.type_name.endswith("Exception")
    assert grpc.StatusCode[status.grpc_code] is not grpc.StatusCode.OK


@pytest.fixture
def raising() -> Iterator[tuple[TestClient, FakePlane]]:
    plane = FakePlane()
    app = RestApis(Settings(), plane, FrontendMetrics("h"), None).listener_app(("inference",))
    with TestClient(app, base_url="http://test") as client:
        yield client, plane


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda c: c.__name__)
def test_rest_answers_each_error_with_its_status_and_json(
    raising: tuple[TestClient, FakePlane], cls: type[TorchwickError]
) -> None:
    client, plane = raising
    error = _make(cls)

    async def fail(request: InferenceRequest, sink: object) -> InferenceResult:
        raise error

    plane.add("m", fail)
    response = client.post("/predictions/m", content=b"x")
    status = ERROR_TABLE[cls]
    assert response.status_code == status.http_status
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "code": status.http_status,
        "type": status.type_name,
        "message": error.message,
    }


@pytest.mark.parametrize(
    ("http", "kind", "grpc_code"),
    [
        (400, "BadRequest", "INVALID_ARGUMENT"),
        (404, "ResourceNotFound", "NOT_FOUND"),
        (409, "Conflict", "ALREADY_EXISTS"),
        (413, "PayloadTooLarge", "RESOURCE_EXHAUSTED"),
        (418, "BadRequest", "INVALID_ARGUMENT"),
        (500, "InternalError", "INTERNAL"),
        (503, "ServiceUnavailable", "UNAVAILABLE"),
        (504, "ResponseTimeout", "DEADLINE_EXCEEDED"),
        (507, "OutOfResources", "RESOURCE_EXHAUSTED"),
        (599, "InternalError", "INTERNAL"),
    ],
)
def test_bare_statuses_resolve_through_the_same_table(
    http: int, kind: str, grpc_code: str
) -> None:
    assert error_class_for_http(http).__name__ == kind
    assert status_for_http(http).http_status == http
    assert grpc_code_for_http(http) == grpc_code


def test_success_is_ok_over_grpc() -> None:
    assert grpc_code_for_http(200) == grpc_code_for_http(206) == "OK"
