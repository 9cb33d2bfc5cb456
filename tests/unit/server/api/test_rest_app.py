"""The assembled REST apps, driven in-process with Starlette's TestClient over a fake data plane."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from starlette.testclient import TestClient

from torchwick.server.api.assembly import RestApis
from torchwick.server.contracts import InferenceRequest, InferenceResult
from torchwick.server.dataplane import RegisterRequest
from torchwick.server.observability.exposition import render_text
from torchwick.server.observability.metrics import FrontendMetrics
from torchwick.server.settings import Settings

from .fakes import FakePlane, FakeTokens, echo, result

UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
INF = {"Authorization": "Bearer inf"}
MGMT = {"Authorization": "Bearer mgmt"}

Factory = Callable[..., TestClient]


@pytest.fixture
def plane() -> FakePlane:
    fake = FakePlane()
    fake.add("echo", echo())
    return fake


@pytest.fixture
def make_client(plane: FakePlane) -> Iterator[Factory]:
    clients: list[TestClient] = []

    def make(
        apis: tuple[str, ...] = ("inference", "management", "metrics"),
        *,
        tokens: FakeTokens | None = None,
        startup_done: bool = True,
        **settings: Any,
    ) -> TestClient:
        config = replace(Settings(), **settings)
        plane.startup_done = startup_done
        rest = RestApis(config, plane, FrontendMetrics("h"), tokens)
        client = TestClient(rest.listener_app(apis), base_url="http://test")
        client.rest = rest  # type: ignore[attr-defined]
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def _last(plane: FakePlane) -> tuple[str, Any]:
    return plane.calls[-1]


def _inferred(plane: FakePlane) -> InferenceRequest:
    calls = [args for name, args in plane.calls if name == "infer"]
    request: InferenceRequest = calls[-1][2]
    return request


# -- inference --------------------------------------------------------------------------------


def test_predict_passes_headers_and_answers_the_handler_body(
    make_client: Factory, plane: FakePlane
) -> None:
    client = make_client()
    response = client.post(
        "/predictions/echo/1.0/v1/models", content=b"abc", headers={"X-Thing": "1", **INF}
    )
    assert response.status_code == 200 and response.content == b"abc"
    assert "content-type" not in response.headers
    request = _inferred(plane)
    headers = dict(request.metadata)
    assert headers["x-thing"] == "1" and not request.explain
    assert request.path_suffix == "v1/models"
    assert headers["authorization"] == "Bearer inf"  # forwarded when token auth is off
    assert request.request_id == response.headers["x-request-id"]
    assert UUID4.fullmatch(request.request_id)
    assert request.inputs[0].name == "body"


def test_fixed_headers_and_cors(make_client: Factory) -> None:
    client = make_client(cors_allowed_origin="*", cors_allowed_methods="GET, POST")
    response = client.get("/ping")
    assert response.headers["pragma"] == "no-cache"
    assert response.headers["cache-control"] == "no-cache; no-store, must-revalidate, private"
    assert response.headers["expires"] == "Thu, 01 Jan 1970 00:00:00 UTC"
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["access-control-allow-methods"] == "GET, POST"
    assert "access-control-allow-headers" not in response.headers
    plain = make_client().get("/ping")
    assert "access-control-allow-origin" not in plain.headers


def test_error_json_is_pretty_with_a_newline(make_client: Factory) -> None:
    response = make_client().post("/predictions/missing")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.text == (
        '{\n  "code": 404,\n  "type": "ModelNotFoundException",\n'
        '  "message": "Model not found: missing"\n}\n'
    )
    unknown = make_client().get("/elsewhere")
    assert unknown.json()["type"] == "ResourceNotFoundException"
    wrong = make_client().delete("/")
    assert wrong.status_code == 405 and wrong.json()["type"] == "MethodNotAllowedException"


def test_ping_reflects_startup_and_health(make_client: Factory, plane: FakePlane) -> None:
    assert (make_client().get("/ping")).json() == {"status": "Healthy"}
    loading = make_client(startup_done=False).get("/ping")
    assert loading.status_code == 500 and loading.json() == {"status": "Unhealthy"}
    plane.is_healthy = False
    assert (make_client().post("/ping")).status_code == 500


def test_declared_oversize_body_is_refused_unread(make_client: Factory, plane: FakePlane) -> None:
    client = make_client(max_request_size=10)
    response = client.post("/predictions/echo", content=b"x" * 11)
    assert response.status_code == 413
    assert response.json()["type"] == "PayloadTooLargeException"
    assert response.headers["connection"] == "close"
    assert not [c for c in plane.calls if c[0] == "infer"]
    assert (client.post("/predictions/echo", content=b"x" * 10)).status_code == 200


def test_handler_headers_are_sanitised(make_client: Factory, plane: FakePlane) -> None:
    headers = (
        ("X-Ok", "yes"),
        ("Content-Length", "1"),
        ("Bad Name", "x"),
        ("x-injected", "a\r\nb"),
        ("Content-Type", "text/csv"),
    )
    plane.add("h", echo(status=201, headers=headers))
    response = make_client().post("/predictions/h", content=b"a,b")
    assert response.status_code == 201
    assert response.headers["x-ok"] == "yes"
    assert response.headers["content-type"] == "text/csv"
    assert response.headers["content-length"] == "3"
    assert "x-injected" not in response.headers and "bad name" not in response.headers


def test_impossible_handler_status_is_500(make_client: Factory, plane: FakePlane) -> None:
    plane.add("odd", echo(status=99))
    response = make_client().post("/predictions/odd", content=b"x")
    assert response.status_code == 500
    assert "invalid HTTP status" in response.json()["message"]


def test_unexpected_failure_is_a_generic_500(make_client: Factory, plane: FakePlane) -> None:
    async def broken(request: InferenceRequest, sink: Any) -> InferenceResult:
        raise RuntimeError("secret detail")

    plane.add("broken", broken)
    response = make_client().post("/predictions/broken", content=b"x")
    assert response.status_code == 500
    assert response.json()["type"] == "InternalServerException"
    assert "secret" not in response.text


def test_intermediate_responses_stream_as_chunks(make_client: Factory, plane: FakePlane) -> None:
    async def streaming(request: InferenceRequest, sink: Any) -> InferenceResult:
        for _ in range(3):
            sink(result(request, body=b"hello", final=False))
            await asyncio.sleep(0)
        return result(request, body=b"hello world ")

    plane.add("stream", streaming)
    response = make_client().post("/predictions/stream")
    assert response.status_code == 200
    assert response.content == b"hellohellohellohello world "
    assert "content-length" not in response.headers


def test_explanations_and_form_inputs(make_client: Factory, plane: FakePlane) -> None:
    response = make_client().post("/explanations/echo", data={"data": "1", "other": "2"})
    assert response.status_code == 200
    request = _inferred(plane)
    assert request.explain
    assert [(p.name, p.value) for p in request.inputs] == [("data", b"1"), ("other", b"2")]


def test_responses_are_counted_by_class(make_client: Factory) -> None:
    # Per-model inference counts live in the data plane (test_dataplane.py).
    client = make_client()
    client.post("/predictions/echo", content=b"x")
    client.post("/predictions/made_up_name", content=b"x")
    text = render_text(client.rest.metrics.registry).decode()  # type: ignore[attr-defined]
    assert 'Requests2XX{Level="Host",Hostname="h",} 1.0' in text
    assert 'Requests4XX{Level="Host",Hostname="h",} 1.0' in text


# -- token authorization ---------------------------------------------------------------------


def test_tokens_guard_each_api_with_its_own_key(make_client: Factory, plane: FakePlane) -> None:
    client = make_client(tokens=FakeTokens())
    assert (client.post("/predictions/echo")).status_code == 401
    assert (client.post("/predictions/echo", headers=MGMT)).status_code == 401
    assert (client.post("/predictions/echo", headers=INF)).status_code == 200
    assert "authorization" not in dict(_inferred(plane).metadata)  # our credential stays ours
    assert (client.get("/models", headers=INF)).status_code == 401
    assert (client.get("/models", headers=MGMT)).status_code == 200
    assert (client.get("/ping")).status_code == 200
    assert (client.options("/")).status_code == 200
    assert (client.get("/metrics")).status_code == 200
    denied = client.get("/models")
    assert denied.json()["type"] == "InvalidKeyException"


def test_token_rotation_needs_the_api_key(make_client: Factory) -> None:
    tokens = FakeTokens()
    client = make_client(("management",), tokens=tokens)
    assert (client.get("/token", params={"type": "inference"}, headers=MGMT)).status_code == 401
    api = {"Authorization": "Bearer api"}
    rotated = client.get("/token", params={"type": "management"}, headers=api)
    assert rotated.status_code == 200 and rotated.text == "\n"
    assert tokens.rotated == ["management"]
    assert (client.get("/token", headers=api)).status_code == 400
    assert (client.get("/token", params={"type": "x"}, headers=api)).status_code == 400
    assert make_client(("management",)).get("/token").status_code == 404


# -- management -------------------------------------------------------------------------------


def test_register_maps_parameters_and_json_bodies(make_client: Factory, plane: FakePlane) -> None:
    client = make_client(enable_model_api=True)
    response = client.post(
        "/models", params={"url": "a.mar", "batch_size": "4", "synchronous": "false"}
    )
    assert response.status_code == 200 and response.json() == {"status": 'Model "None" registered'}
    assert _last(plane) == (
        "register",
        RegisterRequest(url="a.mar", batch_size=4, synchronous=False),
    )
    client.post("/models?url=q.mar", json={"url": "b.mar", "model_name": "b", "initial_workers": 2})
    assert _last(plane) == (
        "register",
        RegisterRequest(url="b.mar", model_name="b", initial_workers=2),
    )
    bad = client.post("/models", params={"url": "a.mar", "max_batch_delay": "soon"})
    assert bad.status_code == 400 and "max_batch_delay" in bad.json()["message"]


def test_model_api_is_off_by_default(make_client: Factory, plane: FakePlane) -> None:
    client = make_client()
    register = client.post("/models", params={"url": "a.mar"})
    assert register.status_code == 405
    assert (client.delete("/models/echo")).status_code == 405
    assert not [c for c in plane.calls if c[0] in ("register", "unregister")]


def test_describe_scale_default_unregister(make_client: Factory, plane: FakePlane) -> None:
    client = make_client(enable_model_api=True)
    assert (client.get("/models/echo/all")).status_code == 200
    assert _last(plane) == ("describe", ("echo", None, True))
    client.get("/models/echo", params={"customized": "true"})
    assert _last(plane) == ("describe_customized", ("echo", None))
    scaled = client.put("/models/echo/1.0", params={"min_worker": 2, "model_version": "9"})
    assert scaled.status_code == 202
    assert _last(plane) == ("scale", ("echo", "1.0", 2, None, False))
    client.put("/models/echo", params={"min_worker": 1, "max_worker": 3, "model_version": "2.0"})
    assert _last(plane) == ("scale", ("echo", "2.0", 1, 3, False))
    assert (client.put("/models/echo/1.0/set-default")).status_code == 200
    assert (client.delete("/models/echo/1.0")).json() == {"status": 'Model "echo" unregistered'}
    listed = client.get("/models", params={"limit": "1000", "next_page_token": "-5"})
    assert listed.status_code == 200 and _last(plane) == ("list", (1000, -5))  # plane clamps
    assert (client.get("/v1/models/echo")).json() == {"name": "echo", "ready": True}


# -- descriptions -------------------------------------------------------------------------------


def test_api_description_matches_the_routes(make_client: Factory) -> None:
    for apis in (("inference",), ("management",), ("metrics",), ("inference", "management")):
        client = make_client(apis, enable_model_api=True)
        document = (client.options("/")).json()
        assert document["openapi"] == "3.0.1"
        assert document == (client.get("/api-description")).json()
        for path, item in document["paths"].items():
            concrete = re.sub(r"\{[^}]+\}", "echo", path)
            for method in item:
                response = client.request(method.upper(), concrete)
                assert response.status_code not in (404, 405) or response.json()["type"] not in (
                    "ResourceNotFoundException",
                    "MethodNotAllowedException",
                ), (apis, method, path, response.text)
        if "inference" in apis:
            assert {"/ping", "/predictions/{model_name}/{model_version}/{url_path}"} <= set(
                document["paths"]
            )


def test_model_options_describe_that_model(make_client: Factory) -> None:
    client = make_client()
    document = (client.options("/predictions/echo")).json()
    assert set(document["paths"]) == {
        "/predictions/echo",
        "/predictions/echo/{model_version}",
        "/predictions/echo/{model_version}/{url_path}",
    }
    params = document["paths"]["/predictions/echo"]["post"]["parameters"]
    assert all(p["name"] != "model_name" for p in params)
    assert (client.options("/predictions/none")).status_code == 404
    managed = (client.options("/models/echo")).json()
    assert "/models/echo/{model_version}/set-default" in managed["paths"]


def test_metrics_endpoint_filters_names(make_client: Factory) -> None:
    client = make_client(("metrics",))
    client.get("/metrics")
    response = client.get("/metrics", params=[("name[]", "Requests2XX")])
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert 'Requests2XX{Level="Host",Hostname="h",} 1.0' in response.text
    assert "Requests4XX" not in response.text
