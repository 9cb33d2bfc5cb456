"""The REST inference API against a real server process with real workers and archives.

One server for the module (secure defaults: token auth on, model API off), with the test
models loaded at startup. Tests here do not change server state.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch

from tests.integration.server import model_handlers as handlers
from tests.support.models import MLP, save_torchscript
from tests.support.server import ServerOptions, ServerProcess, build_archive, running_server

MAX_REQUEST_SIZE = 200_000
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("inference")
    store = root / "model_store"
    store.mkdir()
    for name, source in (
        ("echo", handlers.ECHO),
        ("inspect", handlers.INSPECT),
        ("status", handlers.STATUS),
        ("stream", handlers.STREAM),
        ("validate", handlers.VALIDATE),
    ):
        build_archive(store, name, source)
    mlp_dir = root / "mlp_src"
    serialized = save_torchscript(MLP().eval(), mlp_dir, torch.zeros(1, 64))
    build_archive(store, "mlp", handlers.MLP, serialized_file=mlp_dir / serialized)
    options = ServerOptions(
        load_models="echo.mar,inspect.mar,status.mar,stream.mar,validate.mar,mlp.mar",
        config={"max_request_size": str(MAX_REQUEST_SIZE)},
    )
    with running_server(root, options) as process:
        yield process


@pytest.fixture
def client(server: ServerProcess) -> httpx.Client:
    return server.client("inference")


def _inspect(response: httpx.Response) -> dict[str, object]:
    assert response.status_code == 200, response.text
    value: dict[str, object] = response.json()
    return value


# -- health and descriptions -------------------------------------------------------------------


def test_ping_is_healthy_without_a_token(server: ServerProcess) -> None:
    response = httpx.get(f"{server.inference_url}/ping")
    assert response.status_code == 200
    assert response.json() == {"status": "Healthy"}
    assert response.headers["content-type"] == "application/json"
    assert response.text.endswith("\n")


def test_every_response_has_the_fixed_headers(client: httpx.Client) -> None:
    for response in (client.get("/ping"), client.post("/predictions/nope"), client.get("/x")):
        assert UUID.fullmatch(response.headers["x-request-id"])
        assert response.headers["pragma"] == "no-cache"
        assert response.headers["cache-control"] == "no-cache; no-store, must-revalidate, private"
        assert response.headers["expires"] == "Thu, 01 Jan 1970 00:00:00 UTC"


def test_api_description_lists_the_served_routes(client: httpx.Client) -> None:
    response = client.options("/")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"] == "3.0.1"
    assert {"/ping", "/predictions/{model_name}", "/explanations/{model_name}"} <= set(
        document["paths"]
    )
    assert "/models" not in document["paths"]
    assert client.get("/api-description").json() == document
    assert client.post("/").status_code == 405


def test_options_on_a_model_describes_that_model(client: httpx.Client) -> None:
    response = client.options("/predictions/echo")
    assert response.status_code == 200
    assert "/predictions/echo" in response.json()["paths"]
    assert client.options("/predictions/nope").status_code == 404


# -- inputs -----------------------------------------------------------------------------------


def test_raw_body_is_one_parameter_named_body(client: httpx.Client) -> None:
    seen = _inspect(
        client.post(
            "/predictions/inspect",
            content=b"\x00\x01raw",
            headers={"content-type": "application/octet-stream"},
        )
    )
    assert seen["params"] == {"body": {"kind": "bytes", "value": "\x00\x01raw"}}


def test_json_body_reaches_the_handler_decoded(client: httpx.Client) -> None:
    seen = _inspect(client.post("/predictions/inspect", json={"a": [1, 2]}))
    assert seen["params"] == {"body": {"kind": "dict", "value": {"a": [1, 2]}}}


def test_text_body_is_decoded_to_str(client: httpx.Client) -> None:
    response = client.post(
        "/predictions/inspect",
        content="héllo".encode(),
        headers={"content-type": "text/plain; charset=utf-8"},
    )
    assert _inspect(response)["params"] == {"body": {"kind": "str", "value": "héllo"}}


def test_multipart_fields_and_files_become_parameters(client: httpx.Client) -> None:
    response = client.post(
        "/predictions/inspect",
        data={"name": "value"},
        files={
            "data": ("x.json", b'{"k": 1}', "application/json"),
            "img": ("a.bin", b"\x89PNG", "image/png"),
        },
    )
    params = _inspect(response)["params"]
    assert params == {
        "name": {"kind": "bytes", "value": "value"},
        "data": {"kind": "dict", "value": {"k": 1}},
        "img": {"kind": "bytes", "value": "\x89PNG"},
    }


def test_urlencoded_form_fields_become_parameters(client: httpx.Client) -> None:
    params = _inspect(client.post("/predictions/inspect", data={"a": "1", "b": "two"}))["params"]
    assert params == {"a": {"kind": "bytes", "value": "1"}, "b": {"kind": "bytes", "value": "two"}}


def test_headers_explain_url_path_and_request_id_reach_the_handler(client: httpx.Client) -> None:
    response = client.post(
        "/predictions/inspect/1.0/v1/chat/completions", headers={"X-Custom": "Yes"}, content=b"{}"
    )
    seen = _inspect(response)
    headers = seen["headers"]
    assert isinstance(headers, dict)
    assert headers["x-custom"] == "Yes"
    assert headers["explain"] == "False"
    assert headers["url_path"] == "v1/chat/completions"
    assert "authorization" not in headers  # the server's credential stays with the server
    assert seen["request_id"] == response.headers["x-request-id"]

    plain = _inspect(client.get("/predictions/inspect/"))["headers"]
    assert isinstance(plain, dict)
    assert plain["url_path"] == ""
    explained = _inspect(client.put("/explanations/inspect", content=b"x"))["headers"]
    assert isinstance(explained, dict)
    assert explained["explain"] == "True"


def test_versions_route_to_the_named_version(client: httpx.Client) -> None:
    assert client.post("/predictions/inspect/1.0", content=b"x").status_code == 200
    response = client.post("/predictions/inspect/9.9", content=b"x")
    assert response.status_code == 404
    assert response.json()["type"] == "ModelVersionNotFoundException"


# -- outputs ----------------------------------------------------------------------------------


def test_raw_answer_has_no_content_type_unless_the_handler_sets_one(client: httpx.Client) -> None:
    response = client.post(
        "/predictions/echo", content=b"abc", headers={"content-type": "application/octet-stream"}
    )
    assert response.status_code == 200
    assert response.content == b"abc"
    assert "content-type" not in response.headers


def test_handler_status_headers_and_content_type_are_sent(client: httpx.Client) -> None:
    spec = {
        "status": 201,
        "reason": "Made",
        "content_type": "text/csv",
        "headers": {"X-Model-Note": "fresh", "Content-Length": "999"},
        "body": "a,b\n",
    }
    response = client.post("/predictions/status", json=spec)
    assert response.status_code == 201
    assert response.headers["content-type"] == "text/csv"
    assert response.headers["x-model-note"] == "fresh"
    assert response.content == b"a,b\n"  # the server owns content-length
    teapot = client.post("/predictions/status", json={"status": 418})
    assert teapot.status_code == 418


def test_mlp_model_answers_json(client: httpx.Client) -> None:
    response = client.post("/predictions/mlp", json=[0.5] * 64)
    assert response.status_code == 200
    answer = response.json()
    assert answer["size"] == 10 and 0 <= answer["argmax"] < 10


def test_streamed_answer_arrives_in_chunks(server: ServerProcess, client: httpx.Client) -> None:
    with client.stream("POST", "/predictions/stream", content=b"go") as response:
        assert response.status_code == 200
        assert response.headers["transfer-encoding"] == "chunked"
        chunks = [chunk for chunk in response.iter_raw() if chunk]
    assert b"".join(chunks) == b"hellohellohellohello world "
    assert len(chunks) >= 2


# -- errors -----------------------------------------------------------------------------------


def test_unknown_model_route_and_method(client: httpx.Client) -> None:
    missing = client.post("/predictions/nope", content=b"x")
    assert missing.status_code == 404
    assert missing.json() == {
        "code": 404,
        "type": "ModelNotFoundException",
        "message": "Model not found: nope",
    }
    assert missing.text.startswith('{\n  "code": 404,\n')
    route = client.get("/no/such/route")
    assert route.status_code == 404
    assert route.json()["type"] == "ResourceNotFoundException"
    assert client.options("/ping").status_code == 200  # /ping ignores the method


def test_wrong_method_is_405(server: ServerProcess) -> None:
    response = server.client("management").post("/models/echo")
    assert response.status_code == 405
    assert response.json()["type"] == "MethodNotAllowedException"


def test_missing_or_wrong_token_is_401(server: ServerProcess) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}):
        response = httpx.post(
            f"{server.inference_url}/predictions/echo", content=b"x", headers=headers
        )
        assert response.status_code == 401
        assert response.json()["type"] == "InvalidKeyException"
    management_key = server.auth("management")
    response = httpx.post(
        f"{server.inference_url}/predictions/echo", content=b"x", headers=management_key
    )
    assert response.status_code == 401


def test_oversized_body_is_413_before_it_is_read(client: httpx.Client) -> None:
    response = client.post("/predictions/echo", content=b"x" * (MAX_REQUEST_SIZE + 1))
    assert response.status_code == 413
    assert response.json()["type"] == "PayloadTooLargeException"
    assert client.post("/predictions/echo", content=b"x" * MAX_REQUEST_SIZE).status_code == 200


def test_oversized_chunked_body_is_413(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(50):
            yield b"y" * 10_000

    response = client.post("/predictions/echo", content=chunks())
    assert response.status_code == 413
    assert client.get("/ping").status_code == 200


def test_bad_input_is_a_4xx_and_others_are_unaffected(server: ServerProcess) -> None:
    async def scenario() -> list[httpx.Response]:
        async with server.async_client() as client:
            good = [client.post("/predictions/validate", json={"x": i}) for i in range(10)]
            bad = [
                client.post("/predictions/validate", json=["not", "an", "object"]) for _ in range(5)
            ]
            return await asyncio.gather(*good, *bad)

    responses = asyncio.run(scenario())
    assert [r.json() for r in responses[:10]] == [{"y": i * 2} for i in range(10)]
    for response in responses[10:]:
        assert response.status_code == 400
        assert "number x" in response.json()["message"]
    assert httpx.get(f"{server.inference_url}/ping").status_code == 200


def test_metrics_count_requests(server: ServerProcess, client: httpx.Client) -> None:
    metrics = server.client("metrics")

    def value(pattern: str) -> float:
        match = re.search(pattern + r" (\S+)", metrics.get("/metrics").text)
        return float(match.group(1)) if match else 0.0

    ok_before = value(r'Requests2XX\{Level="Host",Hostname="[^"]*",\}')
    labels = r'\{model_name="echo",model_version="default",hostname="[^"]*",\}'
    echo = "ts_inference_requests_total" + labels
    echo_before = value(echo)
    for _ in range(3):
        assert client.post("/predictions/echo", content=b"m").status_code == 200
    assert value(echo) == echo_before + 3
    assert value(r'Requests2XX\{Level="Host",Hostname="[^"]*",\}') >= ok_before + 3
    assert client.post("/predictions/echo", content=b"").status_code == 200
    latency = value("ts_inference_latency_microseconds" + labels)
    assert latency > 0
    assert (
        'ts_queue_latency_microseconds{model_name="echo",model_version="1.0"'
        in metrics.get("/metrics").text
    )
    only = metrics.get("/metrics", params={"name[]": "Requests4XX"}).text
    assert "Requests4XX" in only and "Requests2XX" not in only


def test_access_log_records_requests(server: ServerProcess, client: httpx.Client) -> None:
    client.post("/predictions/echo?probe=access", content=b"x")
    path = server.workdir / "logs" / "access_log.log"
    found = asyncio.run(_wait_for_text(path, '"POST /predictions/echo?probe=access HTTP/1.1" 200'))
    assert found, path.read_text() if path.exists() else "no access log"


async def _wait_for_text(path: Path, text: str, timeout: float = 5.0) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if path.exists() and text in path.read_text():
            return True
        await asyncio.sleep(0.1)
    return False


def test_json_error_bodies_are_pretty(client: httpx.Client) -> None:
    response = client.post("/predictions/validate", json=[1])
    assert response.headers["content-type"] == "application/json"
    body = json.loads(response.text)
    assert set(body) == {"code", "type", "message"}


# -- secure defaults ----------------------------------------------------------------------------


def test_model_api_is_off_by_default(server: ServerProcess) -> None:
    mgmt = server.client("management")
    register = mgmt.post("/models", params={"url": "echo.mar", "model_name": "again"})
    assert register.status_code == 405
    assert register.json()["type"] == "MethodNotAllowedException"
    assert "enable_model_api" in register.json()["message"]
    assert mgmt.delete("/models/echo").status_code == 405
    assert mgmt.get("/models/echo").status_code == 200  # describe stays allowed
    assert mgmt.put("/models/echo", params={"min_worker": 1}).status_code == 202
    assert server.client().post("/predictions/echo", content=b"still here").status_code == 200
