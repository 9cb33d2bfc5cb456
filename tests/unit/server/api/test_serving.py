"""Listener planning, socket opening and write coalescing."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from torchwick.server.api.serving import ListenerError, _CoalescedWrites, open_listener
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


class _Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> Any:
        return name


async def test_writes_of_one_loop_step_are_sent_together() -> None:
    transport = _Transport()
    coalesced = _CoalescedWrites(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    coalesced.write(b"HTTP/1.1 200 OK\r\n\r\n")
    coalesced.write(b"body")
    assert transport.writes == []
    await asyncio.sleep(0)
    assert transport.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    coalesced.write(b"last")
    coalesced.close()  # close flushes first
    assert transport.writes[-1] == b"last" and transport.closed
    assert coalesced.get_extra_info("peername") == "peername"
