"""One hostile-world setup for the security tier, shared by its tests.

- a local origin server on 127.0.0.1 (``origin.Origin``) with public ``/models/...`` and a
  ``/private/secret.mar`` that must never be fetched;
- folders beside the model store: ``allowed/`` (the one folder file:// URLs may name),
  ``outside/`` (holds ``secret.mar``), ``shared/`` (what store symlinks point to);
- a real torchwick server with the model API on, token auth on, ``echo`` registered at
  startup, ``allowed_urls`` limited to the origin's ``/models/`` and ``allowed/``, and small
  download limits so limit tests are quick.

``after_each`` (autouse) checks what every attack must leave behind: ``/ping`` answers,
``echo`` is still registered and answers, nothing reached ``/private/``.
"""

from __future__ import annotations

import http.server
import random
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.integration.server import model_handlers as handlers
from tests.support.server import ServerOptions, ServerProcess, build_archive, running_server

from .origin import Origin, handler_for

MAX_DOWNLOAD = 256 * 1024
DOWNLOAD_TIMEOUT_S = 4
READ_TIMEOUT_S = 1.5
#: Names an attack that succeeds would download or copy into the store.
_DOWNLOADED_NAMES = {
    *("secret.mar", "good.mar", "to-good.mar", "to-dotdot.mar"),
    *("big.mar", "big-unsized.mar", "drip.mar", "stall.mar"),
}


@dataclass
class World:
    """Everything the attacks aim at."""

    server: ServerProcess
    origin: Origin
    root: Path
    store: Path
    allowed: Path
    outside: Path
    shared: Path
    mgmt: httpx.Client

    def register(self, url: str, **params: str) -> httpx.Response:
        """POST /models with ``url`` (sent encoded, so the server sees exactly ``url``)."""
        return self.mgmt.post("/models", params={"url": url, **params}, timeout=40.0)

    def unregister(self, name: str) -> None:
        response = self.mgmt.delete(f"/models/{name}")
        assert response.status_code == 200, response.text

    def models(self) -> set[str]:
        listed = self.mgmt.get("/models", params={"limit": 100}).json()["models"]
        return {entry["modelName"] for entry in listed}


def _origin() -> Iterator[Origin]:
    origin = Origin()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler_for(origin))
    server.daemon_threads = True
    origin.port = int(server.server_address[1])
    origin.base = f"http://127.0.0.1:{origin.port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield origin
    finally:
        origin.stop.set()
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="package")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("security")
    store, allowed, outside, shared = (
        root / n for n in ("model_store", "allowed", "outside", "shared")
    )
    for folder in (store, allowed, outside, shared):
        folder.mkdir()
    build_archive(store, "echo", handlers.ECHO)
    build_archive(outside, "secret", handlers.ECHO)
    build_archive(allowed, "filegood", handlers.ECHO)
    (allowed / "link.mar").symlink_to(outside / "secret.mar")
    origin_gen = _origin()
    origin = next(origin_gen)
    sources = root / "origin_files"
    sources.mkdir()
    origin.files["/models/good.mar"] = build_archive(
        sources, "httpgood", handlers.ECHO
    ).read_bytes()
    origin.files["/private/secret.mar"] = build_archive(
        sources, "private", handlers.ECHO
    ).read_bytes()
    # A valid archive over the download cap (random bytes do not compress).
    big = build_archive(
        sources, "big", handlers.ECHO, extra_files={"blob.bin": random.Random(0).randbytes(400_000)}
    ).read_bytes()
    assert len(big) > MAX_DOWNLOAD
    origin.files["/models/big.mar"] = big
    origin.files["/models/big-unsized.mar"] = big
    origin.unsized.add("/models/big-unsized.mar")
    origin.redirects.update(
        {
            "/models/to-private.mar": f"{origin.base}/private/secret.mar",
            "/models/to-dotdot.mar": f"{origin.base}/models/%2e%2e/private/secret.mar",
            "/models/to-file.mar": f"file://{outside}/secret.mar",
            "/models/to-good.mar": f"{origin.base}/models/./good.mar",
        }
    )
    config = {
        "allowed_urls": f"{re.escape(origin.base)}/models/.*,file://{re.escape(str(allowed))}/.*",
        "max_download_size": str(MAX_DOWNLOAD),
        "download_timeout_s": str(DOWNLOAD_TIMEOUT_S),
        "download_read_timeout_s": str(READ_TIMEOUT_S),
    }
    options = ServerOptions(enable_model_api=True, load_models="echo=echo.mar", config=config)
    try:
        with running_server(root, options) as server:
            yield World(
                server, origin, root, store, allowed, outside, shared, server.client("management")
            )
    finally:
        next(origin_gen, None)


@pytest.fixture(autouse=True)
def after_each(world: World) -> Iterator[None]:
    """Check what this test's attack left behind, then undo it, so that one successful
    attack fails its own test and not every later one."""
    before = world.models()
    hits_before = len(world.origin.private_hits())
    files_before = set(world.store.iterdir())
    yield
    try:
        assert world.server.alive(), "the server died"
        assert httpx.get(f"{world.server.inference_url}/ping", timeout=10).status_code == 200
        assert "echo" in world.models(), "a registered model was lost"
        assert world.models() <= before, "an attack registered a model"
        assert len(world.origin.private_hits()) == hits_before, "an attack reached /private/"
        answer = world.server.client("inference").post("/predictions/echo", content=b"still")
        assert answer.status_code == 200 and answer.content == b"still"
    finally:
        if world.server.alive():
            for name in world.models() - before:
                world.mgmt.delete(f"/models/{name}")
        # Files a successful download or copy left (archives a test built are kept).
        for path in set(world.store.iterdir()) - files_before:
            if path.name in _DOWNLOADED_NAMES and not path.is_symlink():
                path.unlink()


def assert_refused(response: httpx.Response, status: int, *fragments: str) -> dict[str, str]:
    """A 4xx JSON error body of ``status`` whose message holds every fragment."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) >= {"code", "type", "message"}, body
    assert body["code"] == status
    for fragment in fragments:
        assert fragment in body["message"], (fragment, body["message"])
    return body
