"""What clients see when workers batch, fill up, time out, crash, or lose their client.

One server for the module (token auth off, model API on); every test registers its own
models, so the tests do not interfere.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.server import model_handlers as handlers
from tests.support.server import ServerOptions, ServerProcess, build_archive, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("workers")
    (root / "model_store").mkdir()
    options = ServerOptions(enable_model_api=True, disable_token_auth=True)
    with running_server(root, options) as process:
        yield process


def _register(server: ServerProcess, url: str, name: str, **params: Any) -> None:
    query = {"url": url, "model_name": name, "initial_workers": 1, **params}
    response = server.client("management", timeout=60).post("/models", params=query)
    assert response.status_code == 200, response.text


def _workers(server: ServerProcess, name: str) -> list[dict[str, Any]]:
    workers: list[dict[str, Any]] = (
        server.client("management").get(f"/models/{name}").json()[0]["workers"]
    )
    return workers


def _wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_batches_grow_under_load_and_stay_single_when_idle(server: ServerProcess) -> None:
    store = server.model_store
    build_archive(store, "batcher", handlers.BATCH, config={"batchSize": 8, "maxBatchDelay": 200})
    _register(server, "batcher.mar", "batcher")
    client = server.client()

    latencies = []
    for _ in range(20):
        started = time.perf_counter()
        response = client.post("/predictions/batcher", content=b"1")
        latencies.append(time.perf_counter() - started)
        assert response.json() == {"batch": 1}
    # Alone, a request is dispatched at once: nowhere near the 200 ms max_batch_delay.
    assert statistics.median(latencies) < 0.05, latencies

    async def burst() -> list[int]:
        async with server.async_client() as aclient:
            replies = await asyncio.gather(
                *(aclient.post("/predictions/batcher", content=b"1") for _ in range(32))
            )
        return [r.json()["batch"] for r in replies]

    sizes = asyncio.run(burst())
    assert max(sizes) > 1, sizes
    assert max(sizes) <= 8


def test_full_queue_answers_503(server: ServerProcess, tmp_path: Path) -> None:
    store = server.model_store
    log = tmp_path / "served.log"
    build_archive(store, "tiny_queue", handlers.slow_handler(str(log)), config={"jobQueueSize": 2})
    _register(server, "tiny_queue.mar", "tiny_queue")

    async def flood() -> list[int]:
        async with server.async_client(timeout=30) as aclient:
            first = asyncio.create_task(
                aclient.post("/predictions/tiny_queue", content=b"1.0:first")
            )
            await asyncio.sleep(0.3)  # the first one runs; the queue is empty again
            rest = [
                aclient.post("/predictions/tiny_queue", content=f"0:{i}".encode()) for i in range(6)
            ]
            replies = await asyncio.gather(first, *rest)
        return [r.status_code for r in replies]

    statuses = asyncio.run(flood())
    assert statuses[0] == 200
    assert statuses.count(503) >= 3, statuses
    assert statuses.count(200) >= 3, statuses
    reply = server.client().post("/predictions/tiny_queue", content=b"0:after")
    assert reply.status_code == 200


def test_response_timeout_answers_504_and_the_worker_is_replaced(
    server: ServerProcess, tmp_path: Path
) -> None:
    store = server.model_store
    build_archive(
        store,
        "sluggish",
        handlers.slow_handler(str(tmp_path / "log")),
        config={"responseTimeout": 1},
    )
    _register(server, "sluggish.mar", "sluggish")
    client = server.client()
    response = client.post("/predictions/sluggish", content=b"5:late")
    assert response.status_code == 504
    assert response.json()["type"] == "ResponseTimeoutException"
    _wait_for(
        lambda: client.post("/predictions/sluggish", content=b"0:again").status_code == 200,
        30,
        "a replacement worker",
    )


def test_killed_worker_fails_its_request_and_is_replaced(
    server: ServerProcess, tmp_path: Path
) -> None:
    store = server.model_store
    build_archive(store, "fragile", handlers.slow_handler(str(tmp_path / "log")))
    _register(server, "fragile.mar", "fragile")
    [worker] = _workers(server, "fragile")

    async def crash() -> httpx.Response:
        async with server.async_client(timeout=30) as aclient:
            pending = asyncio.create_task(aclient.post("/predictions/fragile", content=b"3:doomed"))
            await asyncio.sleep(0.5)
            os.kill(worker["pid"], signal.SIGKILL)
            return await pending

    response = asyncio.run(crash())
    assert response.status_code == 500
    assert response.json()["type"] == "InternalServerException"

    def replaced() -> bool:
        ready = [w for w in _workers(server, "fragile") if w["status"] == "READY"]
        return len(ready) == 1 and ready[0]["pid"] != worker["pid"]

    _wait_for(replaced, 30, "the replacement worker")
    assert server.client().post("/predictions/fragile", content=b"0:next").status_code == 200
    assert server.client().get("/ping").status_code == 200


def test_queued_request_of_a_gone_client_never_runs(server: ServerProcess, tmp_path: Path) -> None:
    store = server.model_store
    log = tmp_path / "served.log"
    build_archive(store, "abandoned", handlers.slow_handler(str(log)))
    _register(server, "abandoned.mar", "abandoned")

    async def scenario() -> None:
        async with server.async_client(timeout=30) as aclient:
            busy = asyncio.create_task(aclient.post("/predictions/abandoned", content=b"1.0:busy"))
            await asyncio.sleep(0.2)
            async with server.async_client(timeout=0.3) as impatient:
                with pytest.raises(httpx.TimeoutException):
                    await impatient.post("/predictions/abandoned", content=b"0:gone")
            assert (await busy).status_code == 200

    asyncio.run(scenario())
    time.sleep(0.5)
    ran = log.read_text()
    assert "start busy" in ran
    assert "gone" not in ran
