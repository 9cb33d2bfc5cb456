"""Worker processes end to end: load, predict, stream, crash, hang, timeout, scale, fail."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from torchwick.handlers.messages import PredictResponse
from torchwick.server.errors import InternalError, ModelLoadFailed, ResponseTimeout, WorkerDied
from torchwick.server.workers import WorkerPool, WorkerStatus
from torchwick.server.workers.devices import count_driver_gpus

from .conftest import Harness, HarnessFactory, batch, request

pytestmark = pytest.mark.timeout(90)


async def _run(pool: WorkerPool, *bodies: str) -> list[PredictResponse]:
    lease = await asyncio.wait_for(pool.acquire(), 60)
    return await pool.run_batch(lease, batch(*bodies))


async def _pid(pool: WorkerPool) -> int:
    [info] = pool.describe()
    assert info.pid is not None
    return info.pid


async def test_load_predict_stream_describe_and_logs(harness: Harness) -> None:
    pool = harness.pool()
    assert await asyncio.wait_for(pool.scale(1, wait=True), 60) == 1
    [info] = pool.describe()
    assert (info.id, info.status, info.gpu_id) == ("9000", WorkerStatus.READY, None)
    assert info.pid and info.memory_bytes > 10_000_000
    assert pool.ready_count == 1 and not pool.failed

    responses = await _run(pool, "hello", "print", "threads")
    assert [(r.request_id, r.status) for r in responses] == [("r0", 200), ("r1", 200), ("r2", 200)]
    assert responses[0].body == b"hello"
    cores = len(os.sched_getaffinity(0))
    assert responses[2].body == f"{cores} {cores}".encode()  # one worker: all the cores

    chunks: list[PredictResponse] = []
    lease = await pool.acquire()
    [final] = await pool.run_batch(lease, batch("stream"), chunks.append)
    assert [(c.request_id, c.body, c.final) for c in chunks] == [("r0", b"chunk", False)]
    assert (final.body, final.final) == (b"stream", True)

    lease = await pool.acquire()
    described = await pool.run_describe(lease, request("d", ""))
    assert described.request_id == "d"

    assert any(m.name == "Echoed" for m in harness.metrics)
    log = harness.model_log()
    assert "W-9000-echo_1.0-stdout hello from the handler" in log
    assert "W-9000-echo_1.0-stderr" in log and "a line from the model logger" in log


async def test_failing_load_leaves_a_visible_failed_state(make_harness: HarnessFactory) -> None:
    harness = make_harness(supervisor_options={"max_load_failures": 2})
    (harness.model_dir / "fail_load").touch()
    pool = harness.pool()
    with pytest.raises(ModelLoadFailed, match="cannot read the weights"):
        await asyncio.wait_for(pool.scale(1, wait=True), 60)
    assert pool.failed
    assert pool.last_error is not None and "cannot read the weights" in pool.last_error
    assert [w.status for w in pool.describe()] == [WorkerStatus.FAILED]
    with pytest.raises(ModelLoadFailed):
        await pool.acquire()


async def test_sigkill_mid_batch_fails_fast_and_is_replaced(harness: Harness) -> None:
    pool = harness.pool()
    await asyncio.wait_for(pool.scale(1, wait=True), 60)
    pid = await _pid(pool)
    running = asyncio.create_task(_run(pool, "sleep 30"))
    await asyncio.sleep(0.3)
    started = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(WorkerDied):
        await asyncio.wait_for(running, 10)
    assert time.monotonic() - started < 3.0
    [response] = await asyncio.wait_for(_run(pool, "again"), 60)
    assert response.body == b"again"
    assert await _pid(pool) != pid
    assert pool.describe()[0].id == "9000"  # the same slot, restarted


async def test_handler_exit_mid_batch_is_worker_died(harness: Harness) -> None:
    pool = harness.pool()
    await asyncio.wait_for(pool.scale(1, wait=True), 60)
    with pytest.raises(WorkerDied):
        await asyncio.wait_for(_run(pool, "ok", "crash"), 10)
    [response] = await asyncio.wait_for(_run(pool, "after"), 60)
    assert response.body == b"after"


async def test_response_timeout_kills_and_replaces(harness: Harness) -> None:
    pool = harness.pool(response_timeout=1)
    await asyncio.wait_for(pool.scale(1, wait=True), 60)
    pid = await _pid(pool)
    started = time.monotonic()
    with pytest.raises(ResponseTimeout) as caught:
        await _run(pool, "sleep 30")
    assert caught.value.status.http_status == 504
    assert time.monotonic() - started < 25  # well before the handler would have answered
    [response] = await asyncio.wait_for(_run(pool, "next"), 60)
    assert response.body == b"next"
    assert await _pid(pool) != pid


async def test_hung_idle_worker_is_detected_by_heartbeat(harness: Harness) -> None:
    pool = harness.pool()
    await asyncio.wait_for(pool.scale(1, wait=True), 60)
    pid = await _pid(pool)
    os.kill(pid, signal.SIGSTOP)  # alive but silent: only the heartbeat can tell
    try:
        deadline = time.monotonic() + 10
        while pool.ready_count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert pool.ready_count == 0  # 3 missed beats of 0.25 s
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    [response] = await asyncio.wait_for(_run(pool, "back"), 60)
    assert response.body == b"back"


async def test_scale_up_and_down(harness: Harness) -> None:
    pool = harness.pool()
    assert await asyncio.wait_for(pool.scale(2, wait=True), 90) == 2
    infos = pool.describe()
    assert sorted(i.id for i in infos) == ["9000", "9001"]
    assert all(i.status is WorkerStatus.READY for i in infos)
    cores = len(os.sched_getaffinity(0))
    threads = (await _run(pool, "threads"))[0].body.split()[0]
    assert int(threads) == max(1, cores // 2)
    pids = {i.pid for i in infos}
    # More batches than workers at once: acquirers queue and are handed workers in turn.
    results = await asyncio.gather(*(_run(pool, "sleep 0.05", str(i)) for i in range(6)))
    assert [r[1].body for r in results] == [str(i).encode() for i in range(6)]
    assert await asyncio.wait_for(pool.scale(1, wait=True), 30) == 1
    [left] = pool.describe()
    assert left.pid in pids
    gone = (pids - {left.pid}).pop()
    assert gone is not None
    with pytest.raises(ProcessLookupError):
        os.kill(gone, 0)
    assert await asyncio.wait_for(pool.scale(0, wait=True), 30) == 0
    assert pool.describe() == []


async def test_oversize_answers(harness: Harness) -> None:
    pool = harness.pool(max_response_size=1000)
    await asyncio.wait_for(pool.scale(1, wait=True), 60)
    big, ok = await _run(pool, "big 5000", "fine")
    assert (big.status, ok.status, ok.body) == (500, 200, b"fine")
    assert "max_response_size" in big.reason
    # Each body fits, the frame does not: the frontend rejects it, the worker stays.
    with pytest.raises(InternalError, match="max_response_size"):
        await _run(pool, "big 600", "big 600")
    [response] = await _run(pool, "still here")
    assert response.body == b"still here"
    assert pool.ready_count == 1


async def test_startup_timeout_fails_the_load(make_harness: HarnessFactory) -> None:
    harness = make_harness(supervisor_options={"max_load_failures": 1})
    (harness.model_dir / "slow_load").touch()  # the handler's initialisation sleeps 60 s
    pool = harness.pool(startup_timeout=1)
    with pytest.raises(ModelLoadFailed, match=r"did not load the model within 1 s"):
        await asyncio.wait_for(pool.scale(1, wait=True), 30)
    assert pool.failed


async def test_worker_settings_travel_in_the_load_frame_only(
    make_harness: HarnessFactory,
) -> None:
    harness = make_harness(worker_threads=1)
    pool = harness.pool()
    await asyncio.wait_for(pool.scale(1, wait=True), 60)
    pid = await _pid(pool)
    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        argv = cmdline.read().rstrip(b"\0").split(b"\0")
    assert argv[1:5] == [b"-P", b"-m", b"torchwick.server.workers.worker_main", b"--socket"]
    assert len(argv) == 6 and argv[5].endswith(b"/9000.sock")  # nothing but the socket
    with open(f"/proc/{pid}/environ", "rb") as environ:
        names = {entry.split(b"=", 1)[0] for entry in environ.read().split(b"\0") if entry}
    assert b"TORCHWICK_ADAPTIVE_THREADS" not in names
    # The fixed budget of one thread reached torch and OpenMP through LOAD.
    [response] = await _run(pool, "threads")
    assert response.body == b"1 1"


@pytest.mark.parametrize(("setting", "expected"), [(None, b"1000 None"), (0, b"0 None")])
async def test_the_omp_spin_count_reaches_the_worker_before_torch(
    make_harness: HarnessFactory, setting: int | None, expected: bytes
) -> None:
    options = {} if setting is None else {"worker_omp_spin_count": setting}
    harness = make_harness(**options)
    pool = harness.pool()
    await asyncio.wait_for(pool.scale(1, wait=True), 60)
    [response] = await _run(pool, "spin")
    assert response.body == expected


async def test_an_operator_wait_policy_is_kept(
    make_harness: HarnessFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker inherits the server's environment: an explicit policy there wins.
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    harness = make_harness()
    pool = harness.pool()
    await asyncio.wait_for(pool.scale(1, wait=True), 60)
    [response] = await _run(pool, "spin")
    assert response.body == b"None ACTIVE"


def test_on_uvloop(tmp_path: Path, model_dir: Path) -> None:
    """The server runs on uvloop: its transports are not asyncio.Transport subclasses."""
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> None:
        harness = Harness(tmp_path, model_dir, worker_heartbeat_s=0.25)
        try:
            pool = harness.pool()
            await asyncio.wait_for(pool.scale(1, wait=True), 60)
            assert [r.body for r in await _run(pool, "a", "b")] == [b"a", b"b"]
            pid = await _pid(pool)
            running = asyncio.create_task(_run(pool, "sleep 30"))
            await asyncio.sleep(0.3)
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(WorkerDied):
                await asyncio.wait_for(running, 10)
        finally:
            await harness.supervisor.close()

    uvloop.run(scenario())


@pytest.mark.gpu
@pytest.mark.skipif(count_driver_gpus() == 0, reason="no NVIDIA GPU on this machine")
async def test_gpu_worker_gets_a_device(harness: Harness) -> None:
    pool = harness.pool(device_type="gpu")
    await asyncio.wait_for(pool.scale(1, wait=True), 90)
    assert pool.describe()[0].gpu_id == 0
    [response] = await _run(pool, "device")
    assert response.body == b"0 True"
