"""Cancelling the work of clients that went away."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from torchwick.server.api.disconnect import DisconnectMonitor


async def _never() -> dict[str, Any]:
    await asyncio.Event().wait()
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


async def test_finished_fast_requests_start_no_watcher() -> None:
    monitor = DisconnectMonitor(interval=3600)
    watches = []

    async def served() -> str:
        watch = monitor.watch(_never)
        watches.append(watch)
        watch.stop()
        return "done"

    assert await asyncio.gather(*(served() for _ in range(20))) == ["done"] * 20
    assert all(w.watcher is None and w.timer is None for w in watches)


async def test_a_stopped_watcher_is_cancelled() -> None:
    monitor = DisconnectMonitor(interval=0)
    started = asyncio.Event()

    async def receive() -> dict[str, Any]:
        started.set()
        return await _never()

    watch = monitor.watch(receive)
    await asyncio.wait_for(started.wait(), 5)
    assert watch.watcher is not None
    watch.stop()
    await asyncio.gather(watch.watcher, return_exceptions=True)
    assert watch.watcher.cancelled() and not watch.disconnected


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
