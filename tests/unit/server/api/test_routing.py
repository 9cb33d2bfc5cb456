"""TorchServe's routing rules on the FastAPI/Starlette app: trailing slashes, path captures,
404 vs 405, and validation errors as TorchServe's 400 JSON (Starlette's TestClient)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from torchwick.server.api.assembly import RestApis
from torchwick.server.observability.metrics import FrontendMetrics
from torchwick.server.settings import Settings

from .fakes import FakePlane, echo


@pytest.fixture
def plane() -> FakePlane:
    fake = FakePlane()
    fake.add("echo", echo())
    return fake


@pytest.fixture
def client(plane: FakePlane) -> Iterator[TestClient]:
    rest = RestApis(Settings(), plane, FrontendMetrics("h"), None)
    app = rest.listener_app(("inference", "management", "metrics"))
    with TestClient(app, base_url="http://test", follow_redirects=False) as test_client:
        yield test_client


def test_trailing_slashes_are_ignored_without_a_redirect(
    client: TestClient, plane: FakePlane
) -> None:
    for path in ("/ping/", "/models/", "/models/echo/", "/predictions/echo/1.0/"):
        response = client.get(path)
        assert response.status_code == 200, (path, response.text)
        assert "location" not in response.headers
    assert plane.calls[-1][1][:2] == ("echo", "1.0")


def test_any_method_predicts_and_extra_path_is_url_path(
    client: TestClient, plane: FakePlane
) -> None:
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        assert client.request(method, "/predictions/echo", content=b"x").status_code == 200
    client.post("/predictions/echo/1.0/a/b/c", content=b"x")
    assert plane.calls[-1][1][2].path_suffix == "a/b/c"
    client.post("/predictions/echo/1.0", content=b"x")
    assert plane.calls[-1][1][2].path_suffix == ""


@pytest.mark.parametrize("path", ["/nothing", "/models/a/b/c/d", "/predictions"])
def test_unknown_paths_are_torchserves_404(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.json() == {
        "code": 404,
        "type": "ResourceNotFoundException",
        "message": "Requested resource is not found, please refer to API document.",
    }


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/models/echo/1.0/set-default"), ("POST", "/models/echo"), ("DELETE", "/")],
)
def test_known_path_wrong_method_is_torchserves_405(
    client: TestClient, method: str, path: str
) -> None:
    response = client.request(method, path)
    assert response.status_code == 405
    assert response.json()["type"] == "MethodNotAllowedException"
    assert response.json()["message"].startswith("Requested method is not allowed")


@pytest.mark.parametrize(
    ("path", "params", "name"),
    [
        ("/models", {"limit": "ten"}, "limit"),
        ("/models", {"next_page_token": "1.5"}, "next_page_token"),
        ("/models/echo", {"min_worker": "many"}, "min_worker"),
        ("/models/echo", {"synchronous": "maybe"}, "synchronous"),
    ],
)
def test_bad_query_values_are_400_naming_the_parameter(
    client: TestClient, path: str, params: dict[str, str], name: str
) -> None:
    method = "PUT" if "min_worker" in params or "synchronous" in params else "GET"
    response = client.request(method, path, params=params)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["type"] == "BadRequestException" and body["code"] == 400
    assert f"parameter {name}: {next(iter(params.values()))!r}" in body["message"]


def test_docs_and_openapi_31_are_served(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    assert {"/models", "/predictions/{model_name}", "/metrics", "/ping"} <= set(document["paths"])
    assert client.get("/docs").status_code == 200
    legacy = client.options("/").json()
    assert legacy["openapi"] == "3.0.1"
    assert "anyOf" not in str(legacy)  # nullable parameters use 3.0's "nullable"
