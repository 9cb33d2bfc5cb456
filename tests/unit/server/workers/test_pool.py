"""Pool logic with in-test worker doubles: failure state, backoff, scaling, leasing.

Real processes are exercised in ``tests/integration/workers``; here the worker is replaced so
that restart pacing (injected sleep and clock) and bookkeeping can be checked in milliseconds.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.support.versions import version_config
from torchwick.handlers.messages import PredictRequest, PredictResponse
from torchwick.server.errors import ModelLoadFailed, ServiceUnavailable, WorkerDied
from torchwick.server.model_version import ModelVersionConfig
from torchwick.server.settings import Settings
from torchwick.server.workers import (
    BackoffPolicy,
    WorkerInfo,
    WorkerPool,
    WorkerStatus,
    WorkerSupervisor,
)
from torchwick.server.workers.process_facts import LoadFailedError


class FakeWorker:
    """Stands in for ``WorkerProcess``: scripted start outcome, echo predict."""

    def __init__(self, worker_id: int, outcome: str) -> None:
        self.worker_id = worker_id
        self.outcome = outcome
        self.status = WorkerStatus.LOADING
        self.leased = False
        self.retiring = False
        self.in_flight = 0
        self.held_full = False
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.gate: asyncio.Future[None] | None = None

    @property
    def usable(self) -> bool:
        return self.status is WorkerStatus.READY and not self.exited.done() and not self.retiring

    async def start(self, timeout: float) -> None:
        await asyncio.sleep(0)
        if self.outcome != "ok":
            self.status = WorkerStatus.FAILED
            self.exited.set_result(1)
            raise LoadFailedError(500, self.outcome)
        self.status = WorkerStatus.READY

    async def predict(
        self, batch: list[PredictRequest], *_: Any, on_sent: Any = None, **__: Any
    ) -> list[PredictResponse]:
        if on_sent is not None:
            on_sent()
        if self.gate is not None:
            await self.gate
        if self.exited.done():
            raise WorkerDied("died")
        return [PredictResponse(r.request_id, body=str(self.worker_id).encode()) for r in batch]

    def kill(self, reason: str) -> None:
        if not self.exited.done():
            self.status = WorkerStatus.FAILED
            self.exited.set_result(-9)

    async def stop(self, grace_s: float) -> int:
        self.status = WorkerStatus.UNLOADING
        if not self.exited.done():
            self.exited.set_result(0)
        return await self.exited

    def info(self, gpu_id: int | None) -> WorkerInfo:
        return WorkerInfo(str(self.worker_id), 1, self.status, None, gpu_id, 0)  # type: ignore[arg-type]


class FakeSupervisor(WorkerSupervisor):
    def __init__(self, tmp_path: Path, outcomes: list[str], **kwargs: Any) -> None:
        super().__init__(Settings(log_location=tmp_path), gpu_count=0, cpu_count=2, **kwargs)
        self.outcomes = outcomes
        self.workers: list[FakeWorker] = []
        #: ``(config, worker_id, gpu_id)`` of every ``new_worker`` call.
        self.spawned: list[tuple[ModelVersionConfig, int, int | None]] = []

    def new_worker(self, config: ModelVersionConfig, worker_id: int, gpu_id: int | None) -> Any:
        self.spawned.append((config, worker_id, gpu_id))
        worker = FakeWorker(worker_id, self.outcomes.pop(0) if self.outcomes else "ok")
        self.workers.append(worker)
        return worker


class Sleeps:
    """Injected sleep: records each delay and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


class GatedSleeps(Sleeps):
    """Injected sleep that waits until the test has seen the call (``next_call``)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: asyncio.Queue[asyncio.Future[None]] = asyncio.Queue()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        gate = asyncio.get_running_loop().create_future()
        await self.calls.put(gate)
        await gate

    async def next_call(self) -> None:
        """Let the next sleep (waited for up to 5 s) return."""
        gate = await asyncio.wait_for(self.calls.get(), 5)
        gate.set_result(None)


def _pool(supervisor: WorkerSupervisor, **config: Any) -> WorkerPool:
    return supervisor.create_pool("m_1", version_config(**config))


def _batch() -> list[PredictRequest]:
    return [PredictRequest("r")]


async def test_consecutive_load_failures_fail_the_pool(tmp_path: Path) -> None:
    sleeps = GatedSleeps()
    outcomes = [f"boom {i}" for i in range(1, 6)]
    supervisor = FakeSupervisor(tmp_path, outcomes, sleep=sleeps)
    pool = _pool(supervisor)
    scaling = asyncio.ensure_future(pool.scale(1, wait=True))
    for _ in range(4):
        await sleeps.next_call()
    # The 5th failure: crash-looping; the slot waits out its backoff (never released here).
    await asyncio.wait_for(sleeps.calls.get(), 5)
    with pytest.raises(ModelLoadFailed, match="boom 5"):
        await asyncio.wait_for(scaling, 5)
    assert pool.failed and pool.load_failures == 5
    assert pool.last_error == "boom 5"
    assert sleeps.delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6])
    assert [w.status for w in pool.describe()] == [WorkerStatus.FAILED]
    with pytest.raises(ModelLoadFailed, match="boom 5"):
        await pool.acquire()
    # Scaling again retries at once (the slot's backoff wait ends early).
    assert await asyncio.wait_for(pool.scale(1, wait=True), 5) == 1
    assert not pool.failed
    assert len(supervisor.workers) == 6
    await supervisor.close()


async def test_a_crash_looping_pool_retries_forever_with_capped_backoff(tmp_path: Path) -> None:
    sleeps = Sleeps()
    outcomes = [f"boom {i}" for i in range(1, 21)]
    supervisor = FakeSupervisor(tmp_path, outcomes, sleep=sleeps, max_load_failures=3)
    pool = _pool(supervisor)
    with pytest.raises(ModelLoadFailed):
        await asyncio.wait_for(pool.scale(1, wait=True), 5)
    # Nobody scales again: the slot keeps trying on its own and recovers at the 21st load.
    for _ in range(10_000):
        if pool.ready_count == 1:
            break
        await asyncio.sleep(0)
    assert pool.ready_count == 1 and not pool.failed and pool.load_failures == 0
    assert len(supervisor.workers) == 21
    assert sleeps.delays[:9] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6])
    assert sleeps.delays[9:] == [30.0] * 11  # capped, never given up
    await supervisor.close()


async def test_a_success_resets_the_failure_count(tmp_path: Path) -> None:
    outcomes = ["bad", "bad", "bad", "bad", "ok"]
    supervisor = FakeSupervisor(tmp_path, outcomes, sleep=Sleeps(), max_load_failures=5)
    pool = _pool(supervisor)
    assert await asyncio.wait_for(pool.scale(1, wait=True), 5) == 1
    assert not pool.failed
    await supervisor.close()


async def test_a_dead_worker_is_replaced_with_backoff(tmp_path: Path) -> None:
    sleeps = Sleeps()
    now = [0.0]
    supervisor = FakeSupervisor(
        tmp_path, [], sleep=sleeps, clock=lambda: now[0], backoff=BackoffPolicy(reset_after_s=60)
    )
    pool = _pool(supervisor)
    await pool.scale(1, wait=True)
    for expected in ([0.1], [0.1, 0.2]):
        supervisor.workers[-1].kill("test")
        await asyncio.wait_for(pool.scale(1, wait=True), 5)
        assert sleeps.delays == pytest.approx(expected)
    now[0] += 61  # served a minute: the next crash starts the sequence over
    supervisor.workers[-1].kill("test")
    await asyncio.wait_for(pool.scale(1, wait=True), 5)
    assert sleeps.delays == pytest.approx([0.1, 0.2, 0.1])
    lease = await pool.acquire()
    assert lease.worker_id == "9000"  # the slot keeps its id across restarts
    assert [r.body for r in await pool.run_batch(lease, _batch())] == [b"9000"]
    # Every restart is spawned from the pool's own config, for the same slot.
    assert supervisor.spawned == [(pool.config, 9000, None)] * 4
    await supervisor.close()


async def test_scale_down_prefers_idle_workers_and_retires_busy_ones(tmp_path: Path) -> None:
    supervisor = FakeSupervisor(tmp_path, [], sleep=Sleeps())
    pool = _pool(supervisor)
    assert await pool.scale(3, wait=True) == 3
    first, second, third = supervisor.workers
    busy = await pool.acquire()
    assert busy.worker_id == "9000"
    await pool.scale(1, wait=True)
    assert [w.id for w in pool.describe()] == ["9000"]
    assert second.status is third.status is WorkerStatus.UNLOADING
    first.gate = asyncio.get_running_loop().create_future()
    running = asyncio.create_task(pool.run_batch(busy, _batch()))
    await asyncio.sleep(0)
    scaled = asyncio.create_task(pool.scale(0, wait=True))
    await asyncio.sleep(0)
    assert first.status is WorkerStatus.READY  # its batch is still running
    first.gate.set_result(None)
    assert [r.body for r in await running] == [b"9000"]
    assert await asyncio.wait_for(scaled, 5) == 0
    assert str(first.status) == "UNLOADING"  # retired once its lease came back
    with pytest.raises(ServiceUnavailable):
        await pool.acquire()
    await supervisor.close()


async def test_acquire_waits_and_release_hands_over(tmp_path: Path) -> None:
    supervisor = FakeSupervisor(tmp_path, [], sleep=Sleeps())
    pool = _pool(supervisor)
    await pool.scale(1, wait=True)
    lease = pool.try_acquire()
    assert lease is not None and pool.try_acquire() is None
    waiting = asyncio.create_task(pool.acquire())
    cancelled = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0)
    pool.release(lease)
    with pytest.raises(RuntimeError):
        pool.release(lease)  # a lease is used once
    cancelled.cancel()
    second = await waiting
    assert second.worker_id == "9000"
    # Hand-off to a waiter that is cancelled in the same tick: the worker is not lost.
    third = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0)
    pool.release(second)
    third.cancel()
    with pytest.raises(asyncio.CancelledError):
        await third
    assert pool.idle_count == 1
    await supervisor.close()


async def test_a_failed_pool_wakes_waiting_acquirers(tmp_path: Path) -> None:
    supervisor = FakeSupervisor(tmp_path, ["x", "y"], sleep=Sleeps(), max_load_failures=2)
    pool = _pool(supervisor)
    await pool.scale(1, wait=False)
    with pytest.raises(ModelLoadFailed, match="y"):
        await asyncio.wait_for(pool.acquire(), 5)
    await supervisor.close()


async def test_close_stops_everything(tmp_path: Path) -> None:
    supervisor = FakeSupervisor(tmp_path, [], sleep=Sleeps())
    pool = _pool(supervisor)
    await pool.scale(2, wait=True)
    await supervisor.close()
    assert all(w.exited.done() for w in supervisor.workers)
    assert supervisor.pools == {}
    with pytest.raises(ServiceUnavailable):
        await pool.acquire()
    with pytest.raises(ServiceUnavailable):
        await pool.scale(1, wait=False)


def test_the_pool_does_not_import_the_supervisor() -> None:
    """The pool reaches the supervisor only through the ``SlotProvider`` protocol."""
    import ast

    import torchwick.server.workers.pool as pool_module

    tree = ast.parse(Path(pool_module.__file__).read_text())
    imported = [
        node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    ] + [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    ]
    assert imported and not [name for name in imported if "supervisor" in name]


async def test_load_errors_reach_clients_without_server_paths(tmp_path: Path) -> None:
    leak = f"FileNotFoundError: [Errno 2] No such file or directory: '{tmp_path}/store/m/w.pt'"
    supervisor = FakeSupervisor(tmp_path, [leak], sleep=Sleeps(), max_load_failures=1)
    pool = _pool(supervisor)
    with pytest.raises(ModelLoadFailed) as raised:
        await asyncio.wait_for(pool.scale(1, wait=True), 5)
    for text in (raised.value.message, pool.last_error or ""):
        assert str(tmp_path) not in text
        assert "No such file or directory: '.../w.pt'" in text
    await supervisor.close()


async def test_a_pipelined_worker_takes_batches_up_to_its_depth(tmp_path: Path) -> None:
    supervisor = FakeSupervisor(tmp_path, [], sleep=Sleeps())
    pool = _pool(supervisor, pipeline_depth=2)
    await pool.scale(1, wait=True)
    worker = supervisor.workers[0]
    worker.gate = asyncio.get_running_loop().create_future()
    first = await pool.acquire()
    running = [asyncio.create_task(pool.run_batch(first, _batch()))]
    await asyncio.sleep(0)
    # Sent and not answered: the worker has room for one more batch.
    second = pool.try_acquire()
    assert second is not None and worker.in_flight == 1
    running.append(asyncio.create_task(pool.run_batch(second, _batch())))
    await asyncio.sleep(0)
    # Two in flight: full until one of them is answered.
    assert worker.in_flight == 2 and pool.try_acquire() is None
    third = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0)
    assert not third.done()
    worker.gate.set_result(None)
    await asyncio.gather(*running)
    lease = await asyncio.wait_for(third, 5)
    assert lease.worker_id == "9000" and worker.in_flight == 0
    pool.release(lease)
    assert pool.idle_count == 1
    await supervisor.close()


async def test_without_a_pipeline_a_worker_holds_one_batch(tmp_path: Path) -> None:
    supervisor = FakeSupervisor(tmp_path, [], sleep=Sleeps())
    pool = _pool(supervisor)
    await pool.scale(1, wait=True)
    worker = supervisor.workers[0]
    worker.gate = asyncio.get_running_loop().create_future()
    lease = await pool.acquire()
    running = asyncio.create_task(pool.run_batch(lease, _batch()))
    await asyncio.sleep(0)
    assert worker.in_flight == 1 and pool.try_acquire() is None
    worker.gate.set_result(None)
    await running
    assert pool.idle_count == 1 and worker.in_flight == 0
    await supervisor.close()
