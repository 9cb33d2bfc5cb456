"""Listener planning, socket opening and write coalescing."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from torchwick.server.api.connection_guard import ConnectionGuard, ConnectionLimits
from torchwick.server.api.serving import ListenerError, open_listener, start_uvicorn
from torchwick.server.app import plan_listeners
from torchwick.server.config.addresses import parse_address
from torchwick.server.settings import Settings


def test_equal_addresses_share_a_listener() -> None:
    settings = replace(
        Settings(),
        inference_address="http://127.0.0.1:8080",
        management_address="http://127.0.0.1:8080/",
        metrics_address="http://127.0.0.1:8082",
    )
    plans = plan_listeners(settings)
    assert [plan.apis for plan in plans] == [["inference", "management"], ["metrics"]]


def test_port_zero_never_shares_and_metrics_can_be_off() -> None:
    settings = replace(
        Settings(),
        inference_address="http://127.0.0.1:0",
        management_address="http://127.0.0.1:0",
        enable_metrics_api=False,
    )
    assert [plan.apis for plan in plan_listeners(settings)] == [["inference"], ["management"]]


def test_taken_port_is_a_listener_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenerError, match="cannot listen"):
            open_listener(parse_address(f"http://127.0.0.1:{port}"))


def test_stale_unix_socket_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens
    sock = open_listener(parse_address(f"unix:{path}"))
    try:
        with pytest.raises(ListenerError, match="another server"):
            open_listener(parse_address(f"unix:{path}"))
    finally:
        sock.close()
    path.unlink()
    path.write_text("not a socket")
    with pytest.raises(ListenerError, match="not a socket"):
        open_listener(parse_address(f"unix:{path}"))


async def test_a_listener_serves_until_stopped_and_drains() -> None:
    sock = open_listener(parse_address("http://127.0.0.1:0"))
    port = sock.getsockname()[1]
    release = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/slow":
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    settings = Settings()
    listener = await start_uvicorn(
        app,
        sock,
        parse_address("http://127.0.0.1:0"),
        settings,
        graceful_shutdown_s=5,
        guard=ConnectionGuard(ConnectionLimits.from_settings(settings)),
    )
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        assert (await client.get("/fast")).text == "ok"
        slow = asyncio.create_task(client.get("/slow"))
        while not listener.server.server_state.tasks:  # the slow request is in flight
            await asyncio.sleep(0.001)
        stopping = asyncio.create_task(listener.stop())
        release.set()
        assert (await slow).text == "ok"  # in-flight work finished during the drain
        await stopping
    assert listener.task.done() and listener.server.serving.is_set()
