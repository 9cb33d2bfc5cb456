"""The closed and open loops of ``torchwick bench`` on a virtual clock.

The real ``run_point`` runs on ``VirtualTimeLoop`` with its ``time`` as the injected clock,
against in-memory slots whose answers take a set virtual time: every latency, count and
window below is exact. The open-loop tests check the coordinated-omission accounting: a
request's latency runs from its scheduled time, so a slow answer is charged to every request
that waited behind it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest

from tests.support.virtual_loop import run_virtual
from torchwick.bench.http import ExchangeError
from torchwick.bench.load import PointOutcome, PointPlan, Progress, run_point


class TimedSlot:
    """Answers ``status`` after ``service(n)`` virtual seconds for its n-th request;
    ``abort`` fails the request in flight (as a dropped connection does)."""

    def __init__(self, service: Callable[[int], float], status: int = 200) -> None:
        self.service = service
        self.status = status
        self.sent = 0
        self._waiter: asyncio.Future[int] | None = None

    async def send(self) -> int:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[int] = loop.create_future()
        self._waiter = waiter
        handle = loop.call_later(self.service(self.sent), _settle, waiter, self.status)
        self.sent += 1
        try:
            return await waiter
        finally:
            handle.cancel()
            self._waiter = None

    def abort(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ExchangeError("aborted"))


class RefusingSlot:
    async def send(self) -> int:
        await asyncio.sleep(0)
        raise ExchangeError("ConnectionRefusedError")

    def abort(self) -> None:
        pass


def _settle(waiter: asyncio.Future[int], status: int) -> None:
    if not waiter.done():
        waiter.set_result(status)


def _run(plan: PointPlan, slots: list[object], **kwargs: object) -> PointOutcome:
    async def main() -> PointOutcome:
        clock = asyncio.get_running_loop().time
        return await run_point(plan, lambda i: slots[i], clock=clock, **kwargs)  # type: ignore[arg-type,return-value]

    result: PointOutcome = run_virtual(main())
    return result


def _plan(mode: str, load: float, **kwargs: object) -> PointPlan:
    values: dict[str, object] = {
        "duration_s": 1.0,
        "warmup_s": 0.0,
        "max_requests": 1_000_000,
        "timeout_s": 5.0,
    }
    values.update(kwargs)
    return PointPlan(mode, load, **values)  # type: ignore[arg-type]


def test_closed_loop_counts_answers_inside_the_window() -> None:
    slots: list[object] = [TimedSlot(lambda n: 0.1), TimedSlot(lambda n: 0.1)]
    out = _run(_plan("closed", 2, warmup_s=0.5), slots)
    assert out.window_s == pytest.approx(1.0)
    assert out.ok_in_window == 20
    assert len(out.latencies_s) == 20
    assert out.latencies_s == pytest.approx([0.1] * 20)
    assert out.errors == 0
    assert not out.truncated


def test_open_loop_charges_queueing_behind_a_slow_answer_to_the_waiting_requests() -> None:
    # Due every 0.1 s, one connection, each answer takes 0.25 s: the server falls behind.
    out = _run(_plan("open", 10, connections=1, arrivals="uniform"), [TimedSlot(lambda n: 0.25)])
    # Due at 0.1..0.9; request k starts when k-1 ends: latency = 0.25 + k * 0.15.
    assert out.requests == 9
    assert out.latencies_s == pytest.approx([0.25 + k * 0.15 for k in range(9)])
    # Measured from when the connection took them, every latency would read 0.25.
    assert out.ok_in_window == 3  # answers at 0.35, 0.60, 0.85 fall inside [0, 1)
    assert out.max_backlog >= 4
    assert out.dispatch_lag_s == pytest.approx([0.0] * 9)


def test_open_loop_one_stall_is_seen_by_every_request_behind_it() -> None:
    # One 1 s stall among 10 ms answers at 20 requests/s, one connection.
    service = TimedSlot(lambda n: 1.0 if n == 2 else 0.01)
    out = _run(_plan("open", 20, connections=1, arrivals="uniform", duration_s=2.0), [service])
    due = [0.05 * (k + 1) for k in range(39)]
    end = 0.0
    expected = []
    for k, at in enumerate(due):  # the reference single-server queue
        end = max(at, end) + (1.0 if k == 2 else 0.01)
        expected.append(end - at)
    assert out.latencies_s == pytest.approx(expected)
    # The stall, the 19 requests due during it and those that queued while the backlog
    # drained: a from-send-time measurement would show one slow request.
    assert sum(1 for v in out.latencies_s if v > 0.1) >= 20


def test_open_loop_poisson_matches_a_reference_queue_with_warmup() -> None:
    rate, service, warmup = 40.0, 0.02, 0.5
    out = _run(
        _plan("open", rate, connections=1, warmup_s=warmup, seed=3),
        [TimedSlot(lambda n: service)],
    )
    rng = random.Random(3)
    at, end, expected = 0.0, 0.0, []
    while True:
        at += rng.expovariate(rate)
        if at >= warmup + 1.0:
            break
        end = max(at, end) + service
        if at >= warmup:
            expected.append(end - at)
    assert out.requests == len(expected) > 20
    assert out.latencies_s == pytest.approx(expected)


def test_non_2xx_answers_are_errors_by_status_not_throughput() -> None:
    out = _run(_plan("closed", 1), [TimedSlot(lambda n: 0.1, status=401)])
    assert out.statuses == {401: 10}
    assert out.latencies_s == []
    assert out.ok_in_window == 0
    assert out.errors == 10


def test_closed_loop_timeouts_abort_the_connection_and_count() -> None:
    slot = TimedSlot(lambda n: 10.0)
    out = _run(_plan("closed", 1, duration_s=3.0, timeout_s=1.0), [slot])
    assert out.timeouts >= 2
    assert out.latencies_s == []
    assert slot.sent >= 3


def test_open_loop_requests_waiting_past_the_timeout_are_never_sent() -> None:
    slot = TimedSlot(lambda n: 2.0)
    out = _run(
        _plan("open", 10, connections=1, arrivals="uniform", duration_s=1.0, timeout_s=1.5),
        [slot],
    )
    assert out.requests == 9
    # The first answer (2 s) is past its 1.5 s timeout: aborted. Due times 0.2..0.9 have
    # waited over 1.5 s by then or time out in flight; nothing succeeds.
    assert out.latencies_s == []
    assert out.timeouts + out.unfinished == 9
    assert slot.sent < 9


def test_connection_failures_are_counted() -> None:
    out = _run(_plan("open", 50, connections=2, arrivals="uniform"), [RefusingSlot()] * 2)
    assert out.connection_errors == out.requests == 49
    closed = _run(_plan("closed", 1, duration_s=0.1), [RefusingSlot()])
    assert closed.connection_errors > 0 and closed.latencies_s == []


def test_max_requests_ends_the_window_early() -> None:
    out = _run(_plan("closed", 1, max_requests=5), [TimedSlot(lambda n: 0.1)])
    assert out.requests == 5
    assert out.window_s == pytest.approx(0.5)
    opened = _run(
        _plan("open", 10, connections=1, arrivals="uniform", max_requests=4),
        [TimedSlot(lambda n: 0.01)],
    )
    assert opened.requests == 4
    assert opened.window_s == pytest.approx(0.5)  # the fifth arrival (0.5) ended it


def test_a_deadline_cuts_the_point_short() -> None:
    out = _run(
        _plan("closed", 1, warmup_s=0.2, duration_s=10.0), [TimedSlot(lambda n: 0.1)], deadline=1.2
    )
    assert out.truncated
    assert out.window_s == pytest.approx(0.9, abs=0.11)  # window opens after the first answer


def test_answers_after_the_window_count_in_latency_not_in_throughput() -> None:
    out = _run(_plan("open", 4, connections=8, arrivals="uniform"), [TimedSlot(lambda n: 0.6)] * 8)
    # Due at 0.25, 0.5, 0.75: answered at 0.85, 1.1, 1.35 (the last two in the drain).
    assert out.latencies_s == pytest.approx([0.6, 0.6, 0.6])
    assert out.ok_in_window == 1


def test_progress_is_reported() -> None:
    seen: list[Progress] = []
    _run(_plan("closed", 1, warmup_s=0.5), [TimedSlot(lambda n: 0.1)], progress=seen.append)
    phases = [p.phase for p in seen]
    assert phases[0] == "warmup" and "window" in phases
    assert seen[-1].ok > 0 and seen[-1].planned_s == 1.5
