"""A cheap closed-loop HTTP/1.1 load client on raw asyncio streams, and a trivial endpoint.

The same client drives both servers. Each of ``concurrency`` keep-alive connections sends one
pre-built request, reads the whole response, and sends the next at once (a closed loop). A point
is: warm-up (discarded; it lasts at least until every connection has had one answer, so a deep
queue is in its steady state), a measured window, then a drain in which every connection
finishes its request in flight and stops, so the server's queue is empty before the next point.

Only responses that complete inside the window count. 2xx responses give the throughput and
latency percentiles; other statuses and connection failures (resets, per-request timeouts) are
counted separately. Loads are bounded by time (warm-up + window + one request timeout of drain)
and by a request count, and the benchmark only ever points them at 127.0.0.1.

Run as a script (``python bench_client.py --trivial-server``), this module serves a trivial
endpoint (fixed ``200 {}`` for any request, bodies read and dropped) on a free port and prints
the port: the benchmark measures the client's own ceiling against it.

The request builder, the response reader, the percentile and the event-loop choice come from
``torchwick.bench.http`` and ``torchwick.bench.stats``, the client of ``torchwick bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from torchwick.bench import http
from torchwick.bench.http import loop_name, new_event_loop
from torchwick.bench.stats import percentile

__all__ = ["LoadResult", "build_request", "loop_name", "new_event_loop", "percentile", "run_load"]


def build_request(
    host: str, port: int, path: str, body: bytes | None, content_type: str | None
) -> bytes:
    """One complete HTTP/1.1 request, sent as is for every request of a point."""
    headers = [("Content-Type", content_type)] if body is not None and content_type else []
    method = "POST" if body is not None else "GET"
    return http.build_request(method, f"{host}:{port}", path, body, headers)


@dataclass
class LoadResult:
    """What one measured window saw."""

    concurrency: int
    window_s: float
    ok: int
    #: Non-2xx responses inside the window, by status.
    statuses: dict[int, int]
    #: Connection failures inside the window: refused, reset or closed early.
    connection_errors: int
    #: Requests given up after the per-request timeout (their connection is closed).
    timeouts: int
    #: 2xx latencies in milliseconds, ascending.
    latencies_ms: list[float] = field(repr=False)
    #: Responses of any kind over the whole point (warm-up and drain included).
    total_responses: int = 0

    @property
    def throughput(self) -> float:
        return self.ok / self.window_s if self.window_s > 0 else 0.0

    @property
    def errors(self) -> int:
        return sum(self.statuses.values()) + self.connection_errors + self.timeouts

    def p(self, fraction: float) -> float:
        return percentile(self.latencies_ms, fraction)


class _Point:
    """State shared by the connections of one point (all on one event loop: no locks)."""

    def __init__(self, concurrency: int, max_requests: int) -> None:
        self.measuring = False
        self.stopping = False
        self.max_requests = max_requests
        self.latencies_ns: list[int] = []
        self.statuses: Counter[int] = Counter()
        self.connection_errors = 0
        self.timeouts = 0
        self.total_responses = 0
        self.started_ns = [0] * concurrency
        self.timed_out = [False] * concurrency
        self.writers: list[asyncio.StreamWriter | None] = [None] * concurrency
        self.enough = asyncio.Event()
        #: Connections that have had at least one response; ``all_answered`` when all have.
        self.answered = [False] * concurrency
        self.unanswered = concurrency
        self.all_answered = asyncio.Event()


def _close(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None:
        writer.transport.abort()


async def _connection(index: int, point: _Point, host: str, port: int, request: bytes) -> None:
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    try:
        while not point.stopping:
            if writer is None or reader is None:
                try:
                    reader, writer = await asyncio.open_connection(host, port)
                except OSError:
                    if point.measuring:
                        point.connection_errors += 1
                    await asyncio.sleep(0.01)
                    continue
                point.writers[index] = writer
            start = time.perf_counter_ns()
            point.started_ns[index] = start
            try:
                writer.write(request)
                await writer.drain()
                status, keep_alive = await http.read_response(reader)
            except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                point.started_ns[index] = 0
                if point.measuring:
                    if point.timed_out[index]:
                        point.timeouts += 1
                    else:
                        point.connection_errors += 1
                point.timed_out[index] = False
                _close(writer)
                reader = writer = None
                point.writers[index] = None
                continue
            end = time.perf_counter_ns()
            point.started_ns[index] = 0
            point.total_responses += 1
            if not point.answered[index]:
                point.answered[index] = True
                point.unanswered -= 1
                if not point.unanswered:
                    point.all_answered.set()
            if point.measuring:
                if 200 <= status < 300:
                    point.latencies_ns.append(end - start)
                    if len(point.latencies_ns) >= point.max_requests:
                        point.enough.set()
                else:
                    point.statuses[status] += 1
            if not keep_alive:
                _close(writer)
                reader = writer = None
                point.writers[index] = None
    finally:
        _close(writer)


async def _watchdog(point: _Point, timeout_s: float) -> None:
    """Abort connections whose request has been outstanding longer than ``timeout_s``."""
    timeout_ns = int(timeout_s * 1e9)
    while True:
        await asyncio.sleep(min(0.25, timeout_s / 4))
        now = time.perf_counter_ns()
        for index, started in enumerate(point.started_ns):
            if started and now - started > timeout_ns and not point.timed_out[index]:
                point.timed_out[index] = True
                _close(point.writers[index])


async def run_load(
    host: str,
    port: int,
    request: bytes,
    *,
    concurrency: int,
    warmup_s: float,
    seconds: float,
    max_requests: int = 5_000_000,
    request_timeout_s: float = 30.0,
    on_window_start: Callable[[], None] | None = None,
    on_window_end: Callable[[], None] | None = None,
) -> LoadResult:
    """One point: ``concurrency`` closed-loop connections, warm-up, window, drain.

    The warm-up lasts ``warmup_s`` and at least until every connection has had one response.

    The window ends after ``seconds`` or at ``max_requests`` 2xx responses, whichever is first.
    ``on_window_start``/``on_window_end`` run on the loop at the window's edges (CPU snapshots).
    """
    point = _Point(concurrency, max_requests)
    tasks = [
        asyncio.create_task(_connection(i, point, host, port, request)) for i in range(concurrency)
    ]
    watchdog = asyncio.create_task(_watchdog(point, request_timeout_s))
    try:
        await asyncio.sleep(warmup_s)
        # Past the first round: every connection has had an answer, so a deep queue (c=64 on
        # a 40 ms model) is in its steady state before the window opens.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(point.all_answered.wait(), request_timeout_s)
        if on_window_start is not None:
            on_window_start()
        point.measuring = True
        window_start = time.perf_counter()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(point.enough.wait(), seconds)
        point.measuring = False
        window = time.perf_counter() - window_start
        if on_window_end is not None:
            on_window_end()
        point.stopping = True
        # Drain: every connection finishes the request it has in flight (the watchdog bounds it).
        await asyncio.wait(tasks, timeout=request_timeout_s + 1.0)
    finally:
        point.stopping = True
        for task in tasks:
            task.cancel()
        watchdog.cancel()
        await asyncio.gather(*tasks, watchdog, return_exceptions=True)
    latencies = sorted(ns / 1e6 for ns in point.latencies_ns)
    return LoadResult(
        concurrency=concurrency,
        window_s=window,
        ok=len(latencies),
        statuses=dict(point.statuses),
        connection_errors=point.connection_errors,
        timeouts=point.timeouts,
        latencies_ms=latencies,
        total_responses=point.total_responses,
    )


# --- the trivial endpoint ------------------------------------------------------------------------

_TRIVIAL_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
)


class _TrivialProtocol(asyncio.Protocol):
    """Answers ``200 {}`` to every request; reads (and drops) Content-Length bodies."""

    def __init__(self) -> None:
        self.transport: asyncio.WriteTransport | None = None
        self.buffer = bytearray()
        self.needed = -1  # bytes the current request needs in the buffer; -1: head not seen

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.WriteTransport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.needed < 0:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.buffer[:end]).lower()
                length = 0
                position = head.find(b"\r\ncontent-length:")
                if position >= 0:
                    eol = head.find(b"\r\n", position + 2)
                    length = int(head[position + 17 : eol if eol >= 0 else len(head)])
                self.needed = end + 4 + length
            if len(self.buffer) < self.needed:
                return
            del self.buffer[: self.needed]
            self.needed = -1
            assert self.transport is not None
            self.transport.write(_TRIVIAL_RESPONSE)


async def _serve_trivial() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_TrivialProtocol, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trivial-server", action="store_true", help="serve the trivial endpoint")
    args = parser.parse_args()
    if not args.trivial_server:
        parser.error("nothing to do: pass --trivial-server")
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(_serve_trivial())
    sys.exit(0)


if __name__ == "__main__":
    main()
