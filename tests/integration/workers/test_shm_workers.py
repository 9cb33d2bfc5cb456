"""Shared-memory IPC with real worker processes: the path taken, equal answers, exact cleanup."""

from __future__ import annotations

import asyncio
import os
import signal
import textwrap
from pathlib import Path

import pytest

from torchwick.handlers.messages import InputParameter, PredictRequest, PredictResponse
from torchwick.server.workers import WorkerPool
from torchwick.server.workers.process import WorkerProcess

from .conftest import Harness, HarnessFactory

pytestmark = pytest.mark.timeout(120)

#: Echoes each input and says, in a response header, whether it viewed the frontend's shared
#: memory (a read-only view whose buffer starts at the worker's mapping of the arena:
#: ``zero_copy_inputs`` hands raw bodies over as they arrived).
VIEW_HANDLER = textwrap.dedent(
    """
    import ctypes


    def _arena_starts():
        with open("/proc/self/maps") as maps:
            lines = [line for line in maps if "memfd:torchwick-ipc" in line]
        return {int(line.split("-", 1)[0], 16) for line in lines}


    def handle(data, context):
        if data is None:
            return None
        out = []
        for idx, row in enumerate(data):
            value = row["body"]
            shared = (
                isinstance(value, memoryview)
                and value.readonly
                and ctypes.addressof(value.obj) in _arena_starts()
            )
            context.set_response_header(idx, "x-origin", "shm" if shared else type(value).__name__)
            out.append(bytes(value))
        return out


    handle.zero_copy_inputs = True
    """
)

SHM = {"shm_threshold": 64 * 1024, "shm_size": 8 * 1024 * 1024}
MEMFD = "memfd:torchwick-ipc"


def _maps(pid: int | str = "self") -> int:
    """Mappings of a torchwick arena in a process (0 when it has none or is gone)."""
    try:
        return Path(f"/proc/{pid}/maps").read_text().count(MEMFD)
    except OSError:
        return 0


def _fds(pid: int | str = "self") -> int:
    """Open descriptors of a torchwick arena in a process."""
    count = 0
    for entry in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += MEMFD in os.readlink(entry)
        except OSError:
            continue
    return count


async def _until(condition: object, what: str, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def _worker(pool: WorkerPool) -> WorkerProcess:
    worker = pool._slots[0].worker
    assert worker is not None
    return worker


async def _ready(harness: Harness, **config: object) -> tuple[WorkerPool, WorkerProcess]:
    (harness.model_dir / "echo.py").write_text(VIEW_HANDLER)  # this test's own echo
    pool = harness.pool(**config)
    assert await asyncio.wait_for(pool.scale(1, wait=True), 60) == 1
    worker = _worker(pool)
    lane = worker.channel.shm
    if lane is not None:  # the attach answer follows LOAD_RESULT asynchronously
        await _until(lambda: lane.active, "the worker to map the arena")
    return pool, worker


def _batch(*bodies: bytes) -> list[PredictRequest]:
    return [
        PredictRequest(f"r{i}", (), (InputParameter("body", b, "application/octet-stream"),))
        for i, b in enumerate(bodies)
    ]


async def _run(pool: WorkerPool, *bodies: bytes) -> list[PredictResponse]:
    lease = await asyncio.wait_for(pool.acquire(), 60)
    return await pool.run_batch(lease, _batch(*bodies))


BIG = bytes(range(256)) * 1200  # 300 KiB: above the threshold
SMALL = b"small body"


async def test_large_values_and_answers_take_the_shared_memory_path(harness: Harness) -> None:
    baseline = _maps()
    pool, worker = await _ready(harness, **SHM)
    lane = worker.channel.shm
    assert lane is not None and lane.active
    responses = await _run(pool, BIG, SMALL)
    assert [r.body for r in responses] == [BIG, SMALL]
    origins = [dict(r.headers).get("x-origin") for r in responses]
    assert origins == ["shm", "bytes"]  # the handler viewed the mapped memory, zero-copy
    counters = lane.counters
    assert (counters.values_sent, counters.bytes_sent) == (1, len(BIG))
    assert (counters.bodies_received, counters.bytes_received) == (1, len(BIG))
    assert lane.arena is not None and lane.arena.live == ()  # nothing held after the answer
    # The frontend holds a mapping, no descriptor; the worker likewise.
    assert worker.pid is not None
    assert (_maps() - baseline, _fds(), _maps(worker.pid), _fds(worker.pid)) == (1, 0, 1, 0)


async def test_answers_are_equal_with_shared_memory_off(make_harness: HarnessFactory) -> None:
    on = make_harness(worker_heartbeat_s=0.25)
    off = make_harness(worker_heartbeat_s=0.25)
    with_shm, _ = await _ready(on, **SHM)
    without, worker = await _ready(off, shm_threshold=0, shm_size=8 * 1024 * 1024)
    assert worker.channel.shm is None  # threshold 0: no lane, no arena
    bodies = (BIG, SMALL, BIG[:1000] * 300)
    a = await _run(with_shm, *bodies)
    b = await _run(without, *bodies)
    assert [(r.status, r.body) for r in a] == [(r.status, r.body) for r in b]
    assert [dict(r.headers)["x-origin"] for r in b] == ["bytes"] * 3


async def test_a_killed_worker_leaves_no_mapping_behind(harness: Harness) -> None:
    baseline = _maps()
    pool, worker = await _ready(harness, **SHM)
    assert _maps() == baseline + 1
    pid = worker.pid
    assert pid is not None
    responses = await _run(pool, BIG)  # touch the arena both ways first
    assert responses[0].body == BIG
    os.kill(pid, signal.SIGKILL)
    await asyncio.wait_for(worker.exited, 30)
    assert _maps() == baseline and _fds() == 0  # the frontend unmapped it: the memfd is gone
    # The slot's replacement gets a fresh arena and serves through it.

    def replaced() -> bool:
        current = pool._slots[0].worker
        lane = current.channel.shm if current is not None and current is not worker else None
        return lane is not None and lane.active and current is not None and current.usable

    await _until(replaced, "the replacement to load and map its arena")
    lane = _worker(pool).channel.shm
    assert lane is not None
    assert (await _run(pool, BIG))[0].body == BIG and lane.counters.values_sent == 1
    assert _maps() == baseline + 1


async def test_stopping_the_workers_unmaps_every_arena(harness: Harness) -> None:
    baseline = _maps()
    await _ready(harness, **SHM)
    assert _maps() == baseline + 1
    await harness.supervisor.close()
    assert _maps() == baseline and _fds() == 0
