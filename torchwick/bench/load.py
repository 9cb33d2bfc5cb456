"""One measured point of load: closed loop or open loop, bounded in time and count.

A point is a warm-up (its answers discarded), a measured window, then a drain in which what is
in flight finishes (bounded by the request timeout), so no queue carries over to the next point.

- **Closed loop**: ``concurrency`` client slots each send a request, wait for its answer and
  send the next at once. Latency is from send to answer; the load adapts to the server (a slow
  server is sent less), which is the nature of a closed loop.
- **Open loop**: requests are due at the times of an arrival schedule (Poisson at ``rate``
  by default), whatever the server does; ``connections`` slots take them in order. Latency is
  measured from each request's **scheduled** time, not from when a free connection picked it
  up: a request that waited behind a slow one carries that wait. This is what keeps the figures
  free of coordinated omission (a stalled server cannot hide its stall by slowing the client).

Counting: throughput is 2xx answers that completed inside the window, over the window. The
latency sample is the 2xx answers completing inside the window (closed loop) or the requests
scheduled inside the window (open loop, wherever they completed during the drain). Other
statuses, connection failures, timeouts and requests still unfinished at the end are counted
by kind over the same requests.

Time comes from an injected clock, ``time.perf_counter`` by default (uvloop's ``loop.time()``
has millisecond resolution, too coarse for sub-millisecond latencies); waits are relative
(``asyncio.sleep``), so a test can run the real loops on a virtual-time event loop and pass
that loop's ``time`` as the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

from torchwick.bench.http import ExchangeError
from torchwick.bench.schedule import poisson_arrivals, uniform_arrivals

Mode = Literal["closed", "open"]
Arrivals = Literal["poisson", "uniform"]
#: Pause after a failed connection before the slot tries again (no busy loop on a dead port).
RETRY_PAUSE_S = 0.01
PROGRESS_EVERY_S = 0.2


class Slot(Protocol):
    """One client connection: ``send`` one request, return its status (raise
    :class:`ExchangeError` on failure); ``abort`` drops the connection."""

    async def send(self) -> int: ...

    def abort(self) -> None: ...


@dataclass(frozen=True)
class PointPlan:
    """What one point does. ``load`` is the concurrency (closed) or the rate per second (open)."""

    mode: Mode
    load: float
    duration_s: float
    warmup_s: float
    max_requests: int
    timeout_s: float
    #: Open loop: client connections taking the due requests (closed loop: ``load``).
    connections: int = 1
    arrivals: Arrivals = "poisson"
    seed: int = 0

    @property
    def slots(self) -> int:
        return int(self.load) if self.mode == "closed" else self.connections


@dataclass(frozen=True)
class Progress:
    """A snapshot for a progress display."""

    phase: Literal["warmup", "window", "drain"]
    elapsed_s: float
    planned_s: float
    ok: int
    errors: int


@dataclass
class PointOutcome:
    """What one point measured (latencies in seconds)."""

    window_s: float = 0.0
    #: 2xx answers that completed inside the window (the throughput's numerator).
    ok_in_window: int = 0
    latencies_s: list[float] = field(default_factory=list, repr=False)
    statuses: Counter[int] = field(default_factory=Counter)
    connection_errors: int = 0
    timeouts: int = 0
    #: Measured requests neither answered nor timed out when the drain ended.
    unfinished: int = 0
    #: Measured requests sent (closed) or scheduled (open).
    requests: int = 0
    #: Open loop: most requests ever due and waiting for a free connection.
    max_backlog: int = 0
    #: Open loop: how late the client put each measured request on the queue after its due
    #: time (the client's own lateness, already inside the latencies; large values mean the
    #: client, not the server, limited the point).
    dispatch_lag_s: list[float] = field(default_factory=list, repr=False)
    #: The window was cut short by the run's deadline.
    truncated: bool = False

    @property
    def errors(self) -> int:
        return (
            sum(self.statuses.values()) + self.connection_errors + self.timeouts + self.unfinished
        )


class _State:
    """Shared by the tasks of one point (one event loop: no locks)."""

    def __init__(self, plan: PointPlan, slots: list[Slot], clock: Callable[[], float]) -> None:
        self.plan = plan
        self.slots = slots
        self.out = PointOutcome()
        self.clock = clock
        self.phase: Literal["warmup", "window", "drain"] = "warmup"
        self.stopping = False
        #: Per slot: when its request in flight is timed from (None: none in flight).
        self.started: list[float | None] = [None] * len(slots)
        self.measured = [False] * len(slots)
        self.timed_out = [False] * len(slots)
        self.answered = [False] * len(slots)
        self.unanswered = len(slots)
        self.all_answered = asyncio.Event()
        self.enough = asyncio.Event()
        self.done_times: list[float] = []
        self.window_start = 0.0
        self.window_end = 0.0

    def failed(self, index: int) -> None:
        if self.measured[index]:
            if self.timed_out[index]:
                self.out.timeouts += 1
            else:
                self.out.connection_errors += 1
        self.timed_out[index] = False
        self.started[index] = None

    def answer(self, index: int, status: int, latency: float, end: float) -> None:
        self.started[index] = None
        if not self.answered[index]:
            self.answered[index] = True
            self.unanswered -= 1
            if not self.unanswered:
                self.all_answered.set()
        if 200 <= status < 300:
            self.done_times.append(end)
        if self.measured[index]:
            if 200 <= status < 300:
                self.out.latencies_s.append(latency)
            else:
                self.out.statuses[status] += 1


async def _closed_slot(index: int, state: _State) -> None:
    slot, clock = state.slots[index], state.clock
    while not state.stopping:
        start = clock()
        state.started[index] = start
        state.measured[index] = False
        try:
            status = await slot.send()
        except ExchangeError:
            _count_closed(state, index)
            state.failed(index)
            await asyncio.sleep(RETRY_PAUSE_S)
            continue
        end = clock()
        _count_closed(state, index)
        state.answer(index, status, end - start, end)


def _count_closed(state: _State, index: int) -> None:
    # Closed loop: an answer (or a failure) counts when it comes inside the window.
    state.measured[index] = state.phase == "window"
    if state.measured[index]:
        state.out.requests += 1
        if state.out.requests >= state.plan.max_requests:
            state.enough.set()


async def _open_slot(
    index: int, state: _State, queue: asyncio.Queue[tuple[float, bool]], outstanding: list[int]
) -> None:
    slot, clock, timeout = state.slots[index], state.clock, state.plan.timeout_s
    while True:
        due, measured = await queue.get()
        state.measured[index] = measured
        if clock() - due > timeout:
            # It waited for a free connection past its timeout: a timeout, never sent.
            if measured:
                state.out.timeouts += 1
        else:
            # Timed from the scheduled time: the watchdog and the latency both count the wait.
            state.started[index] = due
            try:
                status = await slot.send()
            except ExchangeError:
                state.failed(index)
            else:
                end = clock()
                state.answer(index, status, end - due, end)
        state.measured[index] = False
        if measured:
            outstanding[0] -= 1
            if outstanding[0] == 0:
                state.enough.set()


async def _watchdog(state: _State) -> None:
    """Abort a slot whose request has been outstanding past the timeout (counted as one)."""
    timeout = state.plan.timeout_s
    while True:
        await asyncio.sleep(min(0.25, timeout / 4))
        now = state.clock()
        for index, started in enumerate(state.started):
            if started is not None and now - started > timeout and not state.timed_out[index]:
                state.timed_out[index] = True
                state.slots[index].abort()


async def _ticker(state: _State, progress: Callable[[Progress], None], t0: float) -> None:
    planned = state.plan.warmup_s + state.plan.duration_s
    while True:
        errors = state.out.errors
        ok = len(state.out.latencies_s)
        progress(Progress(state.phase, state.clock() - t0, planned, ok, errors))
        await asyncio.sleep(PROGRESS_EVERY_S)


def _arrivals(plan: PointPlan, start: float) -> Iterator[float]:
    if plan.arrivals == "uniform":
        return uniform_arrivals(plan.load, start)
    return poisson_arrivals(plan.load, start, random.Random(plan.seed))


async def _dispatch(
    state: _State,
    queue: asyncio.Queue[tuple[float, bool]],
    outstanding: list[int],
    warmup_end: float,
    window_end: float,
) -> None:
    """Put each request on the queue at its due time until the window's end or the count."""
    clock, plan = state.clock, state.plan
    for due in _arrivals(plan, clock()):
        if due >= window_end:
            break
        measured = due >= warmup_end
        if measured:
            if state.phase == "warmup":
                state.phase = "window"
            if state.out.requests >= plan.max_requests:
                state.window_end = due
                break
            state.out.requests += 1
            outstanding[0] += 1
        delay = due - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        if measured:
            state.out.dispatch_lag_s.append(max(0.0, clock() - due))
        queue.put_nowait((due, measured))
        state.out.max_backlog = max(state.out.max_backlog, queue.qsize())


async def run_point(
    plan: PointPlan,
    make_slot: Callable[[int], Slot],
    *,
    deadline: float | None = None,
    progress: Callable[[Progress], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> PointOutcome:
    """Run one point with ``plan.slots`` slots from ``make_slot``; return what it measured.

    ``deadline`` (on ``clock``) cuts the warm-up and window short (``truncated``); the
    drain after it still lasts at most the request timeout plus one second.
    """
    state = _State(plan, [make_slot(i) for i in range(plan.slots)], clock)
    clock = state.clock
    t0 = clock()
    limit = deadline if deadline is not None else float("inf")
    warmup_end = min(t0 + plan.warmup_s, limit)
    state.window_start = warmup_end
    state.window_end = min(warmup_end + plan.duration_s, limit)
    state.out.truncated = state.window_end < warmup_end + plan.duration_s
    helpers = [asyncio.create_task(_watchdog(state))]
    if progress is not None:
        helpers.append(asyncio.create_task(_ticker(state, progress, t0)))
    outstanding = [0]
    queue: asyncio.Queue[tuple[float, bool]] = asyncio.Queue()
    if plan.mode == "closed":
        tasks = [asyncio.create_task(_closed_slot(i, state)) for i in range(plan.slots)]
    else:
        tasks = [
            asyncio.create_task(_open_slot(i, state, queue, outstanding)) for i in range(plan.slots)
        ]
    try:
        if plan.mode == "closed":
            await _closed_phases(state, tasks, warmup_end, limit)
        else:
            await _open_phases(state, queue, outstanding, warmup_end)
    finally:
        state.stopping = True
        for task in tasks + helpers:
            task.cancel()
        await asyncio.gather(*tasks, *helpers, return_exceptions=True)
        for slot in state.slots:
            slot.abort()
    if plan.mode == "open":
        state.out.unfinished = outstanding[0]
    start, end = state.window_start, state.window_end
    state.out.window_s = max(0.0, end - start)
    state.out.ok_in_window = sum(1 for t in state.done_times if start <= t < end)
    return state.out


async def _closed_phases(
    state: _State, tasks: list[asyncio.Task[None]], warmup_end: float, limit: float
) -> None:
    clock, plan = state.clock, state.plan
    await asyncio.sleep(max(0.0, warmup_end - clock()))
    # Past the first round: every slot has had an answer, so a deep queue is in its steady
    # state before the window opens (bounded by the timeout and the deadline).
    with contextlib.suppress(TimeoutError):
        wait = min(plan.timeout_s, max(0.0, limit - clock()))
        await asyncio.wait_for(state.all_answered.wait(), wait)
    state.window_start = clock()
    state.window_end = min(state.window_start + plan.duration_s, limit)
    state.out.truncated = state.window_end < state.window_start + plan.duration_s
    state.phase = "window"
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(state.enough.wait(), max(0.0, state.window_end - clock()))
    state.window_end = min(state.window_end, clock())
    state.phase = "drain"
    state.stopping = True
    # Drain: every slot finishes its request in flight (the watchdog bounds it).
    await asyncio.wait(tasks, timeout=plan.timeout_s + 1.0)


async def _open_phases(
    state: _State,
    queue: asyncio.Queue[tuple[float, bool]],
    outstanding: list[int],
    warmup_end: float,
) -> None:
    clock, plan = state.clock, state.plan
    await _dispatch(state, queue, outstanding, warmup_end, state.window_end)
    # Answers until the window's end count towards its throughput.
    await asyncio.sleep(max(0.0, state.window_end - clock()))
    state.phase = "drain"
    if outstanding[0]:
        state.enough.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.enough.wait(), plan.timeout_s + 1.0)
