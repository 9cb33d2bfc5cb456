"""The batcher's policy: no waiting at low load, batches grow under load, 503s, cancellation."""

from __future__ import annotations

import asyncio

import pytest

from torchwick.handlers.messages import PredictRequest, PredictResponse
from torchwick.server.errors import (
    InternalError,
    QueueFull,
    ResponseTimeout,
    ServiceUnavailable,
    TorchwickError,
    WorkerDied,
)
from torchwick.server.scheduling import Batcher, no_worker_message

from .fake_pool import FakePool


def req(i: int | str) -> PredictRequest:
    return PredictRequest(request_id=str(i))


def make(pool: FakePool, *, batch_size: int = 8, capacity: int = 100) -> Batcher:
    batcher = Batcher(
        pool,
        batch_size=batch_size,
        capacity=capacity,
        unavailable_message=no_worker_message("m"),
    )
    batcher.start()
    return batcher


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_sequential_requests_go_alone_and_without_waiting() -> None:
    pool = FakePool(workers=1)
    batcher = make(pool, batch_size=8)
    for i in range(50):
        response = await batcher.infer(req(i))
        assert response.body == str(i).encode()
    # Each lone request was dispatched in a batch of one, never held back to fill a batch of
    # eight (how long that takes is a benchmark figure, not an assertion).
    assert [len(b) for b in pool.batches] == [1] * 50
    assert batcher.stats().batches == 50


async def test_batches_grow_while_the_worker_is_busy() -> None:
    gate = asyncio.Event()
    pool = FakePool(workers=1, gate=gate)
    batcher = make(pool, batch_size=8)
    tasks = [asyncio.create_task(batcher.infer(req(0)))]
    await settle()
    tasks += [asyncio.create_task(batcher.infer(req(i))) for i in range(1, 20)]
    await settle()
    # The first request found the worker idle and left alone; the rest accumulated.
    assert pool.batches == [["0"]]
    assert batcher.pending == 19
    gate.set()
    results = await asyncio.gather(*tasks)
    assert [r.request_id for r in results] == [str(i) for i in range(20)]
    assert [len(b) for b in pool.batches] == [1, 8, 8, 3]


async def test_requests_arriving_in_one_loop_tick_share_a_batch() -> None:
    pool = FakePool(workers=1)
    batcher = make(pool, batch_size=8)
    await asyncio.gather(*(batcher.infer(req(i)) for i in range(5)))
    assert [len(b) for b in pool.batches] == [5]


async def test_several_workers_run_batches_concurrently() -> None:
    gate = asyncio.Event()
    pool = FakePool(workers=3, gate=gate)
    batcher = make(pool, batch_size=4)
    tasks = []
    for i in range(3):
        tasks.append(asyncio.create_task(batcher.infer(req(i))))
        await settle()
    assert len(pool.batches) == 3
    assert batcher.running_batches == 3
    gate.set()
    await asyncio.gather(*tasks)


async def test_full_queue_answers_503_queue_full() -> None:
    gate = asyncio.Event()
    pool = FakePool(workers=1, gate=gate)
    batcher = make(pool, batch_size=1, capacity=2)
    running = asyncio.create_task(batcher.infer(req("run")))
    await settle()
    queued = [asyncio.create_task(batcher.infer(req(i))) for i in range(2)]
    await settle()
    with pytest.raises(QueueFull) as info:
        await batcher.infer(req("over"))
    assert "queue full" in info.value.message
    assert info.value.status.http_status == 503
    assert batcher.stats().rejected == 1
    gate.set()
    await asyncio.gather(running, *queued)


async def test_a_request_queued_past_its_response_timeout_is_504_and_never_runs() -> None:
    gate = asyncio.Event()
    pool = FakePool(workers=1, gate=gate)
    now = [100.0]
    batcher = Batcher(
        pool,
        batch_size=4,
        capacity=10,
        unavailable_message="none",
        clock=lambda: now[0],
        queue_timeout_s=5.0,
    )
    batcher.start()
    running = asyncio.create_task(batcher.infer(req("run")))
    await settle()
    stale = asyncio.create_task(batcher.infer(req("stale")))
    await settle()
    now[0] += 6.0  # "stale" has now waited longer than the response timeout
    fresh = asyncio.create_task(batcher.infer(req("fresh")))
    await settle()
    gate.set()
    await running
    with pytest.raises(ResponseTimeout, match="was not run"):
        await stale
    assert (await fresh).body == b"fresh"
    ran = [request_id for batch in pool.batches for request_id in batch]
    assert "stale" not in ran and "fresh" in ran
    assert batcher.stats().expired == 1


async def test_no_target_workers_answers_503() -> None:
    batcher = make(FakePool(workers=0))
    with pytest.raises(ServiceUnavailable):
        await batcher.infer(req(1))


async def test_failed_pool_without_ready_workers_answers_503() -> None:
    pool = FakePool(workers=1)
    pool.failed, pool.ready_count = True, 0
    batcher = make(pool)
    with pytest.raises(ServiceUnavailable):
        await batcher.infer(req(1))


async def test_request_cancelled_while_queued_never_runs() -> None:
    gate = asyncio.Event()
    pool = FakePool(workers=1, gate=gate)
    batcher = make(pool, batch_size=8, capacity=2)
    first = asyncio.create_task(batcher.infer(req("a")))
    await settle()
    gone = asyncio.create_task(batcher.infer(req("gone")))
    kept = asyncio.create_task(batcher.infer(req("kept")))
    await settle()
    gone.cancel()
    await settle()
    # The cancelled request no longer uses queue capacity.
    assert batcher.pending == 1
    extra = asyncio.create_task(batcher.infer(req("extra")))
    await settle()
    gate.set()
    await asyncio.gather(first, kept, extra)
    assert gone.cancelled()
    assert pool.batches == [["a"], ["kept", "extra"]]
    assert batcher.stats().dropped == 1


async def test_many_cancellations_are_compacted() -> None:
    gate = asyncio.Event()
    pool = FakePool(workers=1, gate=gate)
    batcher = make(pool, batch_size=1, capacity=1000)
    first = asyncio.create_task(batcher.infer(req("a")))
    await settle()
    doomed = [asyncio.create_task(batcher.infer(req(i))) for i in range(200)]
    await settle()
    for task in doomed:
        task.cancel()
    await settle()
    assert batcher.pending == 0
    gate.set()
    await first
    assert pool.batches == [["a"]]


async def test_worker_death_fails_only_its_batch() -> None:
    gate = asyncio.Event()

    def fail(batch: list[PredictRequest]) -> TorchwickError | None:
        return WorkerDied("Worker died.") if batch[0].request_id == "bad" else None

    pool = FakePool(workers=2, gate=gate, fail_when=fail)
    batcher = make(pool, batch_size=4)
    bad = asyncio.create_task(batcher.infer(req("bad")))
    await settle()
    good = asyncio.create_task(batcher.infer(req("good")))
    await settle()
    assert pool.batches == [["bad"], ["good"]]
    gate.set()
    with pytest.raises(WorkerDied):
        await bad
    assert (await good).request_id == "good"
    # The pool is still usable afterwards.
    assert (await batcher.infer(req("next"))).request_id == "next"


async def test_wrong_number_of_responses_is_an_internal_error() -> None:
    class ShortPool(FakePool):
        async def run_batch(self, lease, batch, on_intermediate=None):  # type: ignore[no-untyped-def]
            await super().run_batch(lease, batch, on_intermediate)
            return []

    batcher = make(ShortPool(workers=1))
    with pytest.raises(InternalError):
        await batcher.infer(req(1))


async def test_intermediate_responses_reach_their_own_request() -> None:
    pool = FakePool(workers=1, stream=True)
    batcher = make(pool)
    seen: list[str] = []

    def sink(response: PredictResponse) -> None:
        seen.append(response.request_id)

    final = await batcher.infer(req("s"), on_intermediate=sink)
    assert final.final and seen == ["s"]


async def test_stop_fails_queued_requests_and_refuses_new_ones() -> None:
    gate = asyncio.Event()
    pool = FakePool(workers=1, gate=gate)
    batcher = make(pool)
    running = asyncio.create_task(batcher.infer(req("run")))
    await settle()
    queued = asyncio.create_task(batcher.infer(req("queued")))
    await settle()
    batcher.stop(ServiceUnavailable("going away"))
    with pytest.raises(ServiceUnavailable, match="going away"):
        await queued
    with pytest.raises(ServiceUnavailable, match="going away"):
        await batcher.infer(req("late"))
    assert not await batcher.drain(timeout=0.01)
    gate.set()
    assert await batcher.drain(timeout=1.0)
    assert (await running).request_id == "run"


async def test_pool_acquire_error_fails_queued_requests() -> None:
    class BrokenPool(FakePool):
        async def acquire(self) -> int:
            raise ServiceUnavailable("pool closed")

    batcher = make(BrokenPool(workers=1))
    with pytest.raises(ServiceUnavailable, match="pool closed"):
        await batcher.infer(req(1))


def test_invalid_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        Batcher(FakePool(), batch_size=0, capacity=1, unavailable_message="x")


async def test_lease_goes_back_when_everything_queued_was_cancelled() -> None:
    gate = asyncio.Event()
    pool = FakePool(workers=1, gate=gate)
    batcher = make(pool)
    running = asyncio.create_task(batcher.infer(req("run")))
    await settle()
    waiting = asyncio.create_task(batcher.infer(req("gone")))
    await settle()  # the dispatcher now waits in acquire() for the busy worker
    waiting.cancel()
    gate.set()
    await running
    await settle()
    assert pool.released == [0]
    assert pool.batches == [["run"]]
    assert (await batcher.infer(req("later"))).request_id == "later"
