"""Cancel inference calls whose client has gone away.

TorchServe runs queued requests even after their clients disconnected; torchwick cancels the
data plane call instead (which drops a still-queued request before it reaches a worker).

Only the public ASGI contract is used: once a request's body has been read, the next
``receive()`` returns ``http.disconnect`` when the client leaves (or when the response is
complete). A watcher task awaiting it costs about 8 us of frontend CPU per request, so it is
started only once a request has been in flight for ``interval`` seconds: fast requests (the
common case) pay one timer, and a slow one is cancelled within ``interval`` of its client
leaving.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .responses import Receive

DEFAULT_INTERVAL_S = 0.02


class Watch:
    """One watched request; ``disconnected`` tells why its task was cancelled."""

    __slots__ = ("disconnected", "receive", "stopped", "task", "timer", "watcher")

    def __init__(self, task: asyncio.Task[Any], receive: Receive) -> None:
        self.task = task
        self.receive = receive
        self.disconnected = False
        self.stopped = False
        self.timer: asyncio.TimerHandle | None = None
        self.watcher: asyncio.Task[None] | None = None

    def stop(self) -> None:
        """The call finished: stop watching (idempotent)."""
        if self.stopped:
            return
        self.stopped = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.watcher is not None and not self.watcher.done():
            self.watcher.cancel()

    def absorb_cancellation(self) -> bool:
        """Called on ``CancelledError``: True when it was this watch's own cancellation (the
        client left), which is then absorbed so the endpoint can end quietly; False when the
        cancellation came from elsewhere (a shutdown) and must propagate."""
        if not self.disconnected:
            return False
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()
        return True

    def start_watcher(self) -> None:
        self.timer = None
        if not self.stopped:
            # Kept referenced: the event loop holds tasks only weakly.
            self.watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        # ASGI servers answer ``http.disconnect`` both when the client leaves and once the
        # response is complete; ``stopped`` tells the two apart.
        message = await self.receive()
        if message["type"] == "http.disconnect" and not self.stopped:
            self.disconnected = True
            self.task.cancel()


class DisconnectMonitor:
    """Starts watches for in-flight requests of one event loop (see the module docs)."""

    def __init__(self, interval: float = DEFAULT_INTERVAL_S) -> None:
        self.interval = interval

    def watch(self, receive: Receive) -> Watch:
        """Start watching the current task's request; call ``Watch.stop`` when done."""
        task = asyncio.current_task()
        assert task is not None, "watch() must be called from a task"
        watch = Watch(task, receive)
        watch.timer = asyncio.get_running_loop().call_later(self.interval, watch.start_watcher)
        return watch
