"""Connection limits in front of uvicorn (connection_guard.py), on a real listener and raw
sockets: silent sockets, slowloris heads, oversized headers and URLs, the connection cap."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from torchwick.server.api.connection_guard import ConnectionGuard, ConnectionLimits
from torchwick.server.api.serving import RunningListener, open_listener, start_uvicorn
from torchwick.server.config.addresses import parse_address
from torchwick.server.settings import Settings

LIMITS = ConnectionLimits(
    head_timeout_s=0.5,
    max_header_size=2048,
    max_header_count=20,
    max_url_length=512,
    max_connections=16,
    retry_after_s=3,
)
#: Generous bound for anything the server should do "at once" on a loaded machine.
DEADLINE_S = 20.0


@dataclass
class Listener:
    port: int
    guard: ConnectionGuard
    running: RunningListener
    release: asyncio.Event


async def _app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/hold":
        await scope["state_release"].wait()
    headers = [(b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"ok"})


async def _start(limits: ConnectionLimits) -> Listener:
    sock = open_listener(parse_address("http://127.0.0.1:0"))
    port = sock.getsockname()[1]
    guard = ConnectionGuard(limits)
    release = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["state_release"] = release
        await _app(scope, receive, send)

    address = parse_address("http://127.0.0.1:0")
    running = await start_uvicorn(
        app, sock, address, Settings(), graceful_shutdown_s=1, guard=guard
    )
    return Listener(port, guard, running, release)


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    started = await _start(LIMITS)
    yield started
    started.release.set()
    await started.running.stop(force=True)


async def _connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def _answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one response (the server closes after errors)."""
    raw = await asyncio.wait_for(reader.read(), DEADLINE_S)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


async def _get(port: int, path: str = "/ping") -> int:
    reader, writer = await _connect(port)
    writer.write(f"GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode())
    status, _, _ = await _answer(reader)
    writer.close()
    return status


async def test_a_socket_that_never_sends_a_byte_is_closed(listener: Listener) -> None:
    reader, writer = await _connect(listener.port)
    assert await asyncio.wait_for(reader.read(), DEADLINE_S) == b""  # closed, no answer
    writer.close()
    assert listener.guard.timed_out >= 1


async def test_a_head_dripped_slower_than_the_deadline_gets_408(listener: Listener) -> None:
    reader, writer = await _connect(listener.port)
    writer.write(b"GET /ping HTTP/1.1\r\nhost: x\r\n")  # and never the end of the head
    status, headers, body = await _answer(reader)
    assert status == 408
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["code"] == 408
    writer.close()


async def test_too_many_header_bytes_get_431(listener: Listener) -> None:
    reader, writer = await _connect(listener.port)
    writer.write(b"GET /ping HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 4096 + b"\r\n\r\n")
    status, _, body = await _answer(reader)
    assert status == 431
    assert "max_header_size" in json.loads(body)["message"]


async def test_too_many_headers_get_431(listener: Listener) -> None:
    reader, writer = await _connect(listener.port)
    lines = "".join(f"x-h{i}: v\r\n" for i in range(30))
    writer.write(f"GET /ping HTTP/1.1\r\nhost: x\r\n{lines}\r\n".encode())
    status, _, body = await _answer(reader)
    assert status == 431
    assert "max_header_count" in json.loads(body)["message"]


async def test_an_over_long_url_gets_400(listener: Listener) -> None:
    reader, writer = await _connect(listener.port)
    writer.write(b"GET /" + b"a" * 1000 + b" HTTP/1.1\r\nhost: x\r\n\r\n")
    status, _, body = await _answer(reader)
    assert status == 400
    assert "max_url_length" in json.loads(body)["message"]


async def test_silent_sockets_at_the_cap_make_room_for_a_ping() -> None:
    # A head deadline longer than the test: only eviction can make room.
    started = await _start(replace(LIMITS, head_timeout_s=DEADLINE_S * 3))
    try:
        silent = [await _connect(started.port) for _ in range(LIMITS.max_connections * 2)]
        # Each new connection evicted the oldest silent one: a ping still gets through.
        assert await _get(started.port) == 200
        assert started.guard.evicted >= LIMITS.max_connections
        assert len(started.guard.open) <= LIMITS.max_connections
        for _, writer in silent:
            writer.close()
    finally:
        await started.running.stop(force=True)


async def test_past_the_cap_with_every_connection_busy_is_503_with_retry_after() -> None:
    started = await _start(replace(LIMITS, max_connections=16, head_timeout_s=DEADLINE_S))
    try:
        busy = []
        for _ in range(16):
            reader, writer = await _connect(started.port)
            writer.write(b"GET /hold HTTP/1.1\r\nhost: x\r\n\r\n")
            busy.append((reader, writer))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_S
        while sum(c.had_head for c in started.guard.open) < 16:
            assert loop.time() < deadline, "the held requests never arrived"
            await asyncio.sleep(0.01)
        reader, writer = await _connect(started.port)
        status, headers, body = await _answer(reader)
        assert status == 503
        assert headers["retry-after"] == "3"
        assert json.loads(body)["type"] == "ServiceUnavailableException"
        started.release.set()
        for held, held_writer in busy:
            assert b"200 OK" in await asyncio.wait_for(held.readline(), DEADLINE_S)
            held_writer.close()
        assert await _get(started.port) == 200
    finally:
        started.release.set()
        await started.running.stop(force=True)


async def test_keep_alive_requests_are_served_and_each_head_has_its_deadline(
    listener: Listener,
) -> None:
    reader, writer = await _connect(listener.port)
    for _ in range(3):
        writer.write(b"GET /ping HTTP/1.1\r\nhost: x\r\n\r\n")
        assert b"200" in await asyncio.wait_for(reader.readline(), DEADLINE_S)
        while (await asyncio.wait_for(reader.readline(), DEADLINE_S)) != b"\r\n":
            pass
        assert await asyncio.wait_for(reader.readexactly(2), DEADLINE_S) == b"ok"
    writer.write(b"GET /ping HTTP/1.1\r\n")  # a later head that stalls
    assert b"408" in await asyncio.wait_for(reader.readline(), DEADLINE_S)
    writer.close()


def test_the_connection_cap_is_lowered_to_the_fd_budget() -> None:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    limits = ConnectionLimits.from_settings(Settings(max_connections=10**9, fd_reserve=64))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)  # may have been raised to the hard
    assert limits.max_connections == max(16, soft - 64)
