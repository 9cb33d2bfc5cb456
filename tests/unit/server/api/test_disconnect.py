"""Cancelling the work of clients that went away."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from torchwick.server.api.disconnect import DisconnectMonitor


class _Cycle:
    """Looks like uvicorn's request cycle: a ``disconnected`` flag behind ``receive``."""

    def __init__(self) -> None:
        self.disconnected = False

    async def receive(self) -> dict[str, Any]:
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}


async def _served(monitor: DisconnectMonitor, receive: Any, seconds: float) -> str:
    watch = monitor.watch(receive)
    try:
        await asyncio.sleep(seconds)
        return "done"
    except asyncio.CancelledError:
        assert watch.disconnected
        return "cancelled"
    finally:
        watch.stop()


async def test_flagged_disconnect_cancels_the_request() -> None:
    monitor = DisconnectMonitor(interval=0.005)
    cycle = _Cycle()
    task = asyncio.create_task(_served(monitor, cycle.receive, 5))
    await asyncio.sleep(0.01)
    cycle.disconnected = True
    assert await asyncio.wait_for(task, 1) == "cancelled"
    assert not monitor.inflight


async def test_finished_requests_leave_nothing_behind() -> None:
    monitor = DisconnectMonitor(interval=0.005)
    results = await asyncio.gather(*(_served(monitor, _Cycle().receive, 0.001) for _ in range(20)))
    assert results == ["done"] * 20
    assert not monitor.inflight
    await asyncio.sleep(0.02)  # the sweeper stops once nothing is in flight


@pytest.mark.parametrize("stop_first", [False, True])
async def test_fallback_watcher_for_plain_receive(stop_first: bool) -> None:
    monitor = DisconnectMonitor(interval=0.005)
    gone = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await gone.wait()
        return {"type": "http.disconnect"}

    task = asyncio.create_task(_served(monitor, receive, 0.05 if stop_first else 5))
    await asyncio.sleep(0.02)
    if stop_first:
        assert await task == "done"
        gone.set()  # the response completing also reads as "disconnect": must not cancel
        await asyncio.sleep(0.01)
    else:
        gone.set()
        assert await asyncio.wait_for(task, 1) == "cancelled"
