"""Running ``async def`` handler code from the worker's synchronous model service.

TorchServe 0.12 awaits a handler's entry point (``async def handle``) when the model-config
sets ``asyncCommunication: true``. torchwick's worker serves one batch at a time and calls
``ModelService.predict`` synchronously, so coroutines are run here instead, whatever the
model-config says:

* one private event loop per worker process, started on first use on a daemon thread named
  ``torchwick-handler-loop``, and kept running between batches, so that tasks a handler
  starts (an engine's background loop, say) keep running as they do under TorchServe's
  always-running loop;
* ``run_sync(awaitable)`` schedules the awaitable on that loop and blocks the calling thread
  until it finishes, returning its result or raising its exception unchanged.

Failure mode: ``run_sync`` called *from a coroutine on that loop* (a synchronous helper called
from an ``async def handle`` that meets another coroutine) would wait for itself forever; it
raises ``RuntimeError`` saying to ``await`` the value instead.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")
LOOP_THREAD_NAME = "torchwick-handler-loop"

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def _running_loop() -> asyncio.AbstractEventLoop:
    global _loop, _thread
    with _lock:
        if _loop is None or _thread is None or not _thread.is_alive():
            loop = asyncio.new_event_loop()
            started = threading.Event()

            def serve() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(started.set)
                loop.run_forever()

            thread = threading.Thread(target=serve, name=LOOP_THREAD_NAME, daemon=True)
            thread.start()
            started.wait()
            _loop, _thread = loop, thread
        return _loop


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


def on_handler_loop() -> bool:
    """True when called from the handler loop's own thread."""
    return _thread is not None and threading.current_thread() is _thread


def run_sync(awaitable: Awaitable[T]) -> T:
    """Run ``awaitable`` on the handler loop and wait for it (see the module docstring)."""
    if on_handler_loop():
        if inspect.iscoroutine(awaitable):
            awaitable.close()  # never awaited: close it so Python does not warn about it
        raise RuntimeError(
            "a synchronous handler method got a coroutine while running inside the handler's "
            "event loop; make the calling method 'async def' and await it"
        )
    future = asyncio.run_coroutine_threadsafe(_await(awaitable), _running_loop())
    return future.result()


def resolve(value: Any) -> Any:
    """``value`` itself, or its result when it is awaitable (a coroutine, task or future)."""
    if inspect.isawaitable(value):
        return run_sync(value)
    return value


def is_async_callable(fn: Callable[..., Any] | None) -> bool:
    """True for ``async def`` functions and methods (also behind ``functools.wraps``)."""
    if fn is None:
        return False
    return inspect.iscoroutinefunction(inspect.unwrap(fn)) or inspect.iscoroutinefunction(fn)
