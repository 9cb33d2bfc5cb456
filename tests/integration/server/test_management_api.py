"""The REST management API against a real server (model API enabled, token auth on).

Tests build their own archives and register them through the API; each uses its own model
names, so they share one server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.server import model_handlers as handlers
from tests.support.server import ServerOptions, ServerProcess, build_archive, running_server

VERSIONED = """
def handle(data, context):
    if data is None:
        return None
    return ["@VERSION@" for _ in data]
"""

DESCRIBABLE = """
import json

from ts.torch_handler.base_handler import BaseHandler


class Describable(BaseHandler):
    def initialize(self, context):
        self.initialized = True

    def preprocess(self, data):
        return data

    def inference(self, data, *args, **kwargs):
        return data

    def postprocess(self, data):
        return ["ok" for _ in data]

    def describe_handle(self):
        return json.dumps({"labels": ["cat", "dog"]})
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("management")
    store = root / "model_store"
    store.mkdir()
    build_archive(store, "echo", handlers.ECHO)
    for version in ("1.0", "2.0"):
        source = VERSIONED.replace("@VERSION@", f"v{version}")
        build_archive(store, "multi", source, version=version, archive_name=f"multi-{version}.mar")
    build_archive(store, "describable", DESCRIBABLE)
    with running_server(root, ServerOptions(enable_model_api=True)) as process:
        yield process


@pytest.fixture
def mgmt(server: ServerProcess) -> httpx.Client:
    return server.client("management", timeout=60.0)


def _register(mgmt: httpx.Client, **params: Any) -> httpx.Response:
    return mgmt.post(
        "/models",
        params={k: str(v).lower() if isinstance(v, bool) else v for k, v in params.items()},
    )


def _wait_workers(
    mgmt: httpx.Client, model: str, count: int, timeout: float = 30.0
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    workers: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        workers = mgmt.get(f"/models/{model}").json()[0]["workers"]
        if len([w for w in workers if w["status"] == "READY"]) == count and len(workers) == count:
            return workers
        time.sleep(0.1)
    raise AssertionError(f"{model}: wanted {count} ready workers, have {workers}")


def test_register_synchronously_then_describe_and_predict(
    server: ServerProcess, mgmt: httpx.Client
) -> None:
    response = _register(mgmt, url="echo.mar", model_name="echo_sync", initial_workers=1)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": 'Model "echo_sync" Version: 1.0 registered with 1 initial workers'
    }
    described = mgmt.get("/models/echo_sync").json()
    assert isinstance(described, list) and len(described) == 1
    entry = described[0]
    assert entry["modelName"] == "echo_sync" and entry["modelVersion"] == "1.0"
    [worker] = entry["workers"]
    assert worker["status"] == "READY" and worker["pid"] > 0 and worker["id"]
    reply = server.client().post("/predictions/echo_sync", content=b"hi")
    assert reply.status_code == 200 and reply.content == b"hi"
    assert _register(mgmt, url="echo.mar", model_name="echo_sync").status_code == 409


def test_register_asynchronously(mgmt: httpx.Client) -> None:
    response = _register(
        mgmt, url="echo.mar", model_name="echo_async", initial_workers=1, synchronous=False
    )
    assert response.status_code == 202
    assert response.json() == {"status": "Processing worker updates..."}
    _wait_workers(mgmt, "echo_async", 1)


def test_register_with_a_json_body(mgmt: httpx.Client) -> None:
    response = mgmt.post(
        "/models", json={"url": "echo.mar", "model_name": "echo_json", "initial_workers": 0}
    )
    assert response.status_code == 200, response.text
    assert "registered with 0 initial workers" in response.json()["status"]


def test_register_errors(mgmt: httpx.Client) -> None:
    missing = mgmt.post("/models")
    assert missing.status_code == 400
    assert missing.json()["message"] == "Parameter url is required."
    malformed = _register(mgmt, url="echo.mar", batch_size="abc")
    assert malformed.status_code == 400
    assert "batch_size" in malformed.json()["message"]
    assert _register(mgmt, url="nothing-here.mar").status_code == 404
    bad_json = mgmt.post(
        "/models", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert bad_json.status_code == 400


def test_list_models_pages(mgmt: httpx.Client) -> None:
    for name in ("list_a", "list_b", "list_c"):
        assert (
            _register(mgmt, url="echo.mar", model_name=name, initial_workers=0).status_code == 200
        )
    everything = mgmt.get("/models").json()
    names = [m["modelName"] for m in everything["models"]]
    assert names == sorted(names) and {"list_a", "list_b", "list_c"} <= set(names)
    first = mgmt.get("/models", params={"limit": 1}).json()
    assert len(first["models"]) == 1 and first["nextPageToken"] == "1"
    second = mgmt.get("/models", params={"limit": 1, "next_page_token": 1}).json()
    assert second["models"][0]["modelName"] == names[1]
    bad = mgmt.get("/models", params={"limit": "ten"})
    assert bad.status_code == 400 and "limit" in bad.json()["message"]


def test_scale_up_and_down(mgmt: httpx.Client) -> None:
    assert (
        _register(mgmt, url="echo.mar", model_name="scaled", initial_workers=1).status_code == 200
    )
    up = mgmt.put("/models/scaled", params={"min_worker": 2, "synchronous": "true"})
    assert up.status_code == 200, up.text
    assert up.json() == {"status": "Workers scaled to 2 for model: scaled"}
    workers = _wait_workers(mgmt, "scaled", 2)
    assert len({w["pid"] for w in workers}) == 2 and len({w["id"] for w in workers}) == 2
    down = mgmt.put("/models/scaled", params={"min_worker": 1, "synchronous": "true", "timeout": 5})
    assert down.status_code == 200
    _wait_workers(mgmt, "scaled", 1)
    accepted = mgmt.put("/models/scaled/1.0", params={"min_worker": 1})
    assert accepted.status_code == 202
    inverted = mgmt.put("/models/scaled", params={"min_worker": 3, "max_worker": 2})
    assert inverted.status_code == 400
    assert inverted.json()["message"] == "max_worker cannot be less than min_worker."
    assert mgmt.put("/models/scaled", params={"min_worker": "x"}).status_code == 400
    assert mgmt.put("/models/unknown", params={"min_worker": 1}).status_code == 404
    assert mgmt.put("/models/scaled/9.9", params={"min_worker": 1}).status_code == 404


def test_versions_default_and_unregister(server: ServerProcess, mgmt: httpx.Client) -> None:
    inference = server.client()
    assert _register(mgmt, url="multi-1.0.mar", initial_workers=1).status_code == 200
    assert _register(mgmt, url="multi-2.0.mar", initial_workers=1).status_code == 200
    assert _register(mgmt, url="multi-2.0.mar").status_code == 409
    every = mgmt.get("/models/multi/all").json()
    assert sorted(e["modelVersion"] for e in every) == ["1.0", "2.0"]
    assert mgmt.get("/models/multi/2.0").json()[0]["modelVersion"] == "2.0"
    assert mgmt.get("/models/multi/3.0").status_code == 404
    assert inference.post("/predictions/multi", content=b"").text == "v1.0"
    assert inference.post("/predictions/multi/2.0", content=b"").text == "v2.0"

    changed = mgmt.put("/models/multi/2.0/set-default")
    assert changed.status_code == 200
    assert changed.json() == {
        "status": 'Default version successfully updated for model "multi" to "2.0"'
    }
    assert inference.post("/predictions/multi", content=b"").text == "v2.0"
    assert mgmt.put("/models/multi/7.0/set-default").status_code == 404

    forbidden = mgmt.delete("/models/multi/2.0")
    assert forbidden.status_code == 403
    assert mgmt.delete("/models/multi").status_code == 403  # the default, others remain
    removed = mgmt.delete("/models/multi/1.0")
    assert removed.status_code == 200
    assert removed.json() == {"status": 'Model "multi" unregistered'}
    assert mgmt.delete("/models/multi/2.0").status_code == 200
    assert mgmt.get("/models/multi").status_code == 404
    assert inference.post("/predictions/multi", content=b"").status_code == 404


def test_readiness_and_customized_describe(mgmt: httpx.Client) -> None:
    assert _register(mgmt, url="describable.mar", initial_workers=1).status_code == 200
    assert mgmt.get("/v1/models/describable").json() == {"name": "describable", "ready": True}
    assert mgmt.get("/v1/models/nothing").status_code == 404
    assert mgmt.post("/v1/models/describable").status_code == 405
    custom = mgmt.get("/models/describable", params={"customized": "true"})
    assert custom.status_code == 200, custom.text
    assert custom.json()[0]["customizedMetadata"] == {"labels": ["cat", "dog"]}


def test_management_needs_the_management_token(server: ServerProcess) -> None:
    url = f"{server.management_url}/models"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers=server.auth("inference")).status_code == 401
    assert httpx.get(url, headers=server.auth("management")).status_code == 200
    description = httpx.options(f"{server.management_url}/")
    assert description.status_code == 200
    assert "/models/{model_name}/{model_version}/set-default" in description.json()["paths"]
    assert httpx.get(f"{server.metrics_url}/metrics").status_code == 200


def test_token_rotation(server: ServerProcess) -> None:
    old = server.keys()
    url = f"{server.management_url}/token"
    assert (
        httpx.get(url, params={"type": "inference"}, headers=server.auth("management")).status_code
        == 401
    )
    assert httpx.get(url, params={"type": "bogus"}, headers=server.auth("api")).status_code == 400
    rotated = httpx.get(url, params={"type": "inference"}, headers=server.auth("api"))
    assert rotated.status_code == 200
    assert rotated.text == "\n" and rotated.headers["content-type"] == "application/json"
    new = server.keys()
    assert new["inference"] != old["inference"] and new["management"] == old["management"]
    ping = f"{server.inference_url}/predictions/nothing"
    assert (
        httpx.post(ping, headers={"Authorization": f"Bearer {old['inference']}"}).status_code == 401
    )
    assert (
        httpx.post(ping, headers={"Authorization": f"Bearer {new['inference']}"}).status_code == 404
    )
