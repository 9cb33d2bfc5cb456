"""An asyncio event loop on a virtual clock, for testing time logic without waiting.

``VirtualTimeLoop.time()`` is a number that only moves when the loop would otherwise sleep:
when no callback is ready and no file descriptor has an event, the loop jumps its clock to the
next timer instead of blocking. Code under test that takes its time from ``loop.time()`` and
sleeps with ``asyncio.sleep`` then runs exactly as it would in real time, instantly and
deterministically. Real sockets still work (they are polled without blocking), but a test that
waits on one with no timer pending fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Mapping
from typing import Any


class _VirtualSelector(selectors.BaseSelector):
    """Polls a real selector without blocking and turns the wait into a clock jump."""

    def __init__(self) -> None:
        self._real = selectors.DefaultSelector()
        self.now = 0.0

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            raise RuntimeError("the virtual-time loop would block forever (nothing scheduled)")
        self.now += timeout
        return ready

    def close(self) -> None:
        self._real.close()

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose ``time()`` is virtual (starts at 0.0)."""

    def __init__(self) -> None:
        self._virtual = _VirtualSelector()
        super().__init__(self._virtual)

    def time(self) -> float:
        return self._virtual.now


def run_virtual(coroutine: Any) -> Any:
    """Run ``coroutine`` to completion on a fresh :class:`VirtualTimeLoop`."""
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(coroutine)
