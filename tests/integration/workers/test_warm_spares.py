"""Warm spare workers with real processes: taken, replaced, refitted, killed, closed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.processes import descendants, gone
from torchwick.server.errors import ModelLoadFailed
from torchwick.server.workers import WorkerPool
from torchwick.server.workers.spares import WarmProfile

from .conftest import Harness, HarnessFactory, batch

pytestmark = pytest.mark.timeout(120)


async def _until(predicate: Callable[[], bool], what: str, timeout_s: float = 90) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def _ready_spare(harness: Harness, not_pid: int | None = None) -> tuple[int, WarmProfile]:
    spares = harness.supervisor.spares
    await _until(
        lambda: any(pid != not_pid for pid, _ in spares.ready()), "a ready warm spare worker"
    )
    [(pid, profile)] = spares.ready()
    return pid, profile


async def _answer(pool: WorkerPool, body: str) -> bytes:
    lease = await asyncio.wait_for(pool.acquire(), 60)
    [response] = await pool.run_batch(lease, batch(body))
    assert response.status == 200
    return response.body


async def test_a_scale_up_takes_the_spare_and_a_fitting_one_replaces_it(
    make_harness: HarnessFactory,
) -> None:
    # Four cores: the first worker gets all four threads, the next one two.
    harness = make_harness(supervisor_options={"cpu_count": 4}, warm_workers=1)
    harness.supervisor.start()
    spare_pid, profile = await _ready_spare(harness)
    assert profile == WarmProfile(threads=4)
    with open(f"/proc/{spare_pid}/cmdline", "rb") as cmdline:
        argv = cmdline.read().rstrip(b"\0").split(b"\0")
    # The worker's own command line: -P, the socket, and the budget it warmed up with.
    assert argv[1:5] == [b"-P", b"-m", b"torchwick.server.workers.worker_main", b"--socket"]
    assert argv[6:] == [b"--warm-threads", b"4"]

    pool = harness.pool()
    assert await asyncio.wait_for(pool.scale(1, wait=True), 60) == 1
    [info] = pool.describe()
    assert (info.id, info.pid) == ("9000", spare_pid)
    # Moved into the model folder and sized exactly like a cold worker with this budget.
    assert os.readlink(f"/proc/{spare_pid}/cwd") == str(harness.model_dir)
    assert await _answer(pool, "threads") == b"4 4"
    # Its output is the model's now: the log lines carry the worker's name.
    assert await _answer(pool, "print") == b"print"
    await _until(
        lambda: "W-9000-echo_1.0-stdout hello from the handler" in harness.model_log(),
        "the handler's line in the model log",
    )

    # The replacement is made for the next worker: two threads with two slots live.
    replacement, profile = await _ready_spare(harness, not_pid=spare_pid)
    assert replacement != spare_pid and profile == WarmProfile(threads=2)
    await asyncio.wait_for(pool.scale(2, wait=True), 60)
    assert {i.pid for i in pool.describe()} == {spare_pid, replacement}

    # With both slots closed a new worker would get four threads again: the two-thread spare
    # that was made meanwhile no longer fits and is replaced by a four-thread one.
    third, _ = await _ready_spare(harness, not_pid=replacement)
    await asyncio.wait_for(pool.scale(0, wait=True), 60)
    await _until(
        lambda: [p for _, p in harness.supervisor.spares.ready()] == [WarmProfile(4)],
        "a four-thread spare",
    )
    await _until(lambda: gone(third), "the unfitting spare to exit")


async def test_a_spare_that_does_not_fit_leaves_the_worker_cold(
    make_harness: HarnessFactory,
) -> None:
    harness = make_harness(supervisor_options={"cpu_count": 4}, warm_workers=1)
    harness.supervisor.start()
    spare_pid, _ = await _ready_spare(harness)
    # A second pool's slot opened first makes the next worker a two-thread one.
    first, second = harness.pool(), harness.pool()
    await asyncio.wait_for(first.scale(1, wait=True), 60)  # takes the four-thread spare
    [taken] = first.describe()
    assert taken.pid == spare_pid
    replacement, profile = await _ready_spare(harness, not_pid=spare_pid)
    assert profile == WarmProfile(threads=2)
    # Another slot opens first (as a concurrent scale-up's would): the next worker is the
    # third live one, a one-thread worker, which the two-thread spare does not fit.
    extra, gpu = harness.supervisor.open_slot(second.config, "another pool")
    try:
        await asyncio.wait_for(second.scale(1, wait=True), 60)
        [cold] = second.describe()
        assert cold.pid not in (spare_pid, replacement)
        assert await _answer(second, "threads") == b"1 1"
        assert [pid for pid, _ in harness.supervisor.spares.ready()] == [replacement]
    finally:
        harness.supervisor.close_slot(extra, gpu)


async def test_a_failed_load_on_a_taken_spare_is_a_normal_failed_load(
    make_harness: HarnessFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="torchwick.server.workers.supervisor")
    harness = make_harness(supervisor_options={"max_load_failures": 1}, warm_workers=1)
    harness.supervisor.start()
    spare_pid, _ = await _ready_spare(harness)
    # The handler looks for this file in its cwd: the spare, started elsewhere, sees it only
    # if it moved into the model folder at LOAD.
    (harness.model_dir / "fail_load").touch()
    pool = harness.pool()
    with pytest.raises(ModelLoadFailed, match="cannot read the weights"):
        await asyncio.wait_for(pool.scale(1, wait=True), 60)
    assert f"W-9000-echo_1.0 takes the warm spare worker (pid {spare_pid})" in caplog.text
    await _until(lambda: gone(spare_pid), "the failed worker to exit")


async def test_a_killed_spare_is_replaced_with_one_warning(
    make_harness: HarnessFactory, caplog: pytest.LogCaptureFixture
) -> None:
    harness = make_harness(warm_workers=1)
    harness.supervisor.start()
    caplog.set_level(logging.DEBUG, logger="torchwick.server.workers.spares")
    first, _ = await _ready_spare(harness)
    os.kill(first, signal.SIGKILL)
    second, _ = await _ready_spare(harness, not_pid=first)
    assert second != first and gone(first)
    warnings = [
        r for r in caplog.records if r.name.endswith("spares") and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1 and "exited (code -9)" in warnings[0].getMessage()


async def test_close_stops_every_spare_and_worker(make_harness: HarnessFactory) -> None:
    harness = make_harness(warm_workers=2)
    harness.supervisor.start()
    await _until(lambda: len(harness.supervisor.spares.ready()) == 2, "two spares")
    pool = harness.pool()
    await asyncio.wait_for(pool.scale(1, wait=True), 60)
    await _until(lambda: len(harness.supervisor.spares.ready()) == 2, "the replacement")
    pids = [pid for pid, _ in harness.supervisor.spares.ready()]
    pids += [i.pid for i in pool.describe() if i.pid is not None]
    assert len(pids) == 3
    await harness.supervisor.close()
    # close() returns once every process has exited and been reaped.
    assert [pid for pid in pids if not gone(pid)] == []


async def test_no_spares_when_turned_off(make_harness: HarnessFactory) -> None:
    harness = make_harness(warm_workers=0)
    harness.supervisor.start()
    pool = harness.pool()
    await asyncio.wait_for(pool.scale(1, wait=True), 60)
    assert harness.supervisor.spares.ready() == []
    assert await _answer(pool, "cold") == b"cold"


async def test_a_spare_that_cannot_start_is_retried_with_backoff_and_one_warning(
    make_harness: HarnessFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A broken torch in the workers' environment: every spare exits at its warm-up import.
    broken = tmp_path / "broken"
    (broken / "torch").mkdir(parents=True)
    (broken / "torch" / "__init__.py").write_text("raise ImportError('torch is broken here')\n")
    environ = {**os.environ, "PYTHONPATH": str(broken)}
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)  # the backoff asked for; no real waiting
        await asyncio.sleep(0)

    caplog.set_level(logging.DEBUG, logger="torchwick.server.workers.spares")
    harness = make_harness(supervisor_options={"environ": environ, "sleep": sleep})
    harness.supervisor.start()
    await _until(lambda: len(delays) >= 4, "four failed spare starts")
    await harness.supervisor.close()
    assert delays[:4] == [0.1, 0.2, 0.4, 0.8]
    assert harness.supervisor.spares.ready() == []
    records = [r for r in caplog.records if r.name.endswith("spares")]
    warnings = [r for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "could not start" in warnings[0].getMessage()
    assert sum(r.levelno == logging.DEBUG for r in records) >= 3
    assert "torch is broken here" in harness.model_log()


async def test_a_stop_while_a_spare_starts_warns_about_nothing(
    make_harness: HarnessFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # Closed once the spare's process exists, it is usually still importing torch (else it
    # is ready): either way a normal stop is nothing to warn about.
    harness = make_harness(warm_workers=1)
    caplog.set_level(logging.INFO, logger="torchwick.server.workers")
    harness.supervisor.start()

    def spawned() -> bool:
        for pid in descendants(os.getpid()):
            with contextlib.suppress(OSError):
                if b"--warm-threads" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return True
        return False

    await _until(spawned, "the spare's process")
    await harness.supervisor.close()
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("torchwick.server.workers") and r.levelno >= logging.WARNING
    ]
    assert warnings == []
