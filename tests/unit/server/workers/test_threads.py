"""AdaptiveThreads: one thread for tiny batches or contended cores, the budget back otherwise.

Time and run-queue delays are injected: nothing here depends on the machine's speed or load.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from torchwick.server.workers.cpu_share import RunDelayMeter
from torchwick.server.workers.threads import AdaptiveThreads, Regime, omp_wait_environment


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def contended(threads: AdaptiveThreads, clock: Clock, batches: int, share: float) -> None:
    """``batches`` batches of 0.2 s (8 samples) whose threads waited ``share`` of their time."""
    for _ in range(batches):
        clock.now += 0.2
        threads.observe(0.2, 0.2 * threads.threads * share, samples=8)


def test_tiny_batches_drop_to_one_thread_and_heavy_ones_restore_the_budget() -> None:
    calls: list[int] = []
    threads = AdaptiveThreads(2, calls.append, small_s=0.002)
    assert threads.threads == 2
    for _ in range(3):
        threads.observe(0.0002)
    assert threads.threads == 1 and calls == [1] and threads.regime is Regime.TINY
    # Between small_s and small_s * budget: hysteresis keeps one thread.
    for _ in range(5):
        threads.observe(0.003)
    assert threads.threads == 1
    for _ in range(5):
        threads.observe(0.030)
    assert threads.threads == 2 and calls == [1, 2] and threads.regime is Regime.FULL


def test_heavy_batches_on_free_cores_keep_the_budget() -> None:
    calls: list[int] = []
    clock = Clock()
    threads = AdaptiveThreads(4, calls.append, clock=clock)
    contended(threads, clock, 20, share=0.05)
    assert threads.threads == 4 and calls == [] and threads.contended_drops == 0


def test_threads_waiting_for_a_cpu_drop_to_one_thread_after_min_batches() -> None:
    calls: list[int] = []
    clock = Clock()
    threads = AdaptiveThreads(2, calls.append, clock=clock, min_batches=3)
    contended(threads, clock, 2, share=0.6)
    assert threads.threads == 2  # two batches are not yet a verdict
    contended(threads, clock, 1, share=0.6)
    assert threads.threads == 1 and calls == [1]
    assert threads.regime is Regime.CONTENDED and threads.contended_drops == 1


def test_one_slow_batch_among_free_ones_is_not_contention() -> None:
    calls: list[int] = []
    clock = Clock()
    threads = AdaptiveThreads(2, calls.append, clock=clock, smoothing=0.2)
    contended(threads, clock, 5, share=0.0)
    contended(threads, clock, 1, share=0.9)  # the moving average: 0.18
    contended(threads, clock, 5, share=0.0)
    assert threads.threads == 2 and calls == []


def test_a_probe_that_finds_free_cores_keeps_the_budget() -> None:
    calls: list[int] = []
    clock = Clock()
    threads = AdaptiveThreads(2, calls.append, clock=clock, probe_after_s=5.0)
    contended(threads, clock, 3, share=0.6)
    assert threads.threads == 1
    # Still on one thread until probe_after_s has passed (a batch is 0.2 s: 24 batches).
    contended(threads, clock, 24, share=0.0)
    assert threads.threads == 1
    contended(threads, clock, 1, share=0.0)
    assert threads.threads == 2 and threads.probes == 1 and calls == [1, 2]
    contended(threads, clock, 30, share=0.02)
    assert threads.threads == 2 and calls == [1, 2]


def test_probes_that_meet_contention_again_back_off_up_to_the_limit() -> None:
    calls: list[int] = []
    clock = Clock()
    threads = AdaptiveThreads(
        2, calls.append, clock=clock, probe_after_s=5.0, max_probe_after_s=12.0
    )
    contended(threads, clock, 3, share=0.6)
    dropped_at = [clock.now]
    for _ in range(4):
        while threads.threads == 1:
            contended(threads, clock, 1, share=0.6)
        contended(threads, clock, 3, share=0.6)
        assert threads.threads == 1
        dropped_at.append(clock.now)
    waits = [b - a for a, b in itertools.pairwise(dropped_at)]
    # Each wait is the backoff (5, 10, 12, 12 s: doubled, capped) plus the probe's 3 batches.
    assert [round(w - 0.6) for w in waits] == [5, 10, 12, 12]
    assert threads.probes == 4 and threads.contended_drops == 5


def test_a_probe_faster_per_sample_than_one_thread_keeps_the_budget_despite_waits() -> None:
    calls: list[int] = []
    clock = Clock()
    threads = AdaptiveThreads(2, calls.append, clock=clock, probe_after_s=1.0)
    contended(threads, clock, 3, share=0.6)
    # One thread while contended: 0.4 s per batch of 8, until the probe begins.
    while threads.threads == 1:
        clock.now += 0.4
        threads.observe(0.4, 0.0, samples=8)
    # The budget waits 40% of the time but takes 0.2 s per batch: twice as fast, so it stays.
    contended(threads, clock, 10, share=0.4)
    assert threads.threads == 2 and threads.contended_drops == 1
    # Slower than one thread was, and still waiting: back to one thread.
    for _ in range(5):  # the moving average needs a few batches to cross 0.9x
        clock.now += 0.5
        threads.observe(0.5, 0.5 * 2 * 0.4, samples=8)
    assert threads.threads == 1 and threads.contended_drops == 2


def test_without_a_wait_measurement_only_the_tiny_rule_applies() -> None:
    calls: list[int] = []
    threads = AdaptiveThreads(2, calls.append)
    for _ in range(10):
        threads.observe(0.2, None, samples=8)
    assert threads.threads == 2 and calls == []


def test_run_measures_the_batch_and_its_waits() -> None:
    clock = Clock()
    waited = [10.0]
    calls: list[int] = []
    threads = AdaptiveThreads(2, calls.append, clock=clock, waits=lambda: waited[0])

    def batch() -> str:
        clock.now += 0.2
        waited[0] += 0.3  # two threads, 0.4 s of thread time: 75% waiting
        return "answers"

    assert [threads.run(batch, 8) for _ in range(3)] == ["answers"] * 3
    assert threads.threads == 1 and threads.regime is Regime.CONTENDED


def test_run_does_not_observe_a_failed_batch() -> None:
    clock = Clock()
    threads = AdaptiveThreads(2, [].append, clock=clock, waits=lambda: 0.0)

    def fails() -> None:
        clock.now += 0.0001
        raise ValueError("bad batch")

    for _ in range(5):
        with pytest.raises(ValueError):
            threads.run(fails, 1)
    assert threads.threads == 2  # tiny, but failures are not observed


def test_tiny_batches_are_not_metered() -> None:
    reads: list[int] = []

    def waits() -> float:
        reads.append(1)
        return 0.0

    clock = Clock()
    threads = AdaptiveThreads(2, [].append, clock=clock, waits=waits)
    for _ in range(3):
        threads.run(lambda: clock.__setattr__("now", clock.now + 0.0001), 1)
    assert threads.regime is Regime.TINY
    before = len(reads)
    for _ in range(5):
        threads.run(lambda: clock.__setattr__("now", clock.now + 0.0001), 1)
    assert len(reads) == before


def test_omp_wait_environment_sets_the_spin_count_unless_the_operator_chose() -> None:
    assert omp_wait_environment(1000, {}) == {"GOMP_SPINCOUNT": "1000"}
    assert omp_wait_environment(0, {"PATH": "/bin"}) == {"GOMP_SPINCOUNT": "0"}
    assert omp_wait_environment(-1, {}) == {}
    assert omp_wait_environment(1000, {"OMP_WAIT_POLICY": "ACTIVE"}) == {}
    assert omp_wait_environment(1000, {"GOMP_SPINCOUNT": "5"}) == {}


def test_run_delay_meter_sums_the_second_schedstat_field(tmp_path: Path) -> None:
    for tid, line in (("1", "500 2000000000 7\n"), ("2", "9 500000000 1\n")):
        (tmp_path / tid).mkdir()
        (tmp_path / tid / "schedstat").write_text(line)
    (tmp_path / "3").mkdir()  # a thread that exited: no schedstat any more
    meter = RunDelayMeter(tmp_path)
    assert meter.available and meter.read() == pytest.approx(2.5)


def test_run_delay_meter_rereads_kept_files_and_follows_the_task_list(tmp_path: Path) -> None:
    for tid in ("1", "2"):
        (tmp_path / tid).mkdir()
        (tmp_path / tid / "schedstat").write_text("1 1000000000 1\n")
    meter = RunDelayMeter(tmp_path)
    assert meter.read() == pytest.approx(2.0)
    (tmp_path / "1" / "schedstat").write_text("1 3000000000 1\n")  # the thread waited more
    (tmp_path / "2" / "schedstat").unlink()
    (tmp_path / "2").rmdir()  # the thread exited
    (tmp_path / "3").mkdir()  # a new one started
    (tmp_path / "3" / "schedstat").write_text("1 500000000 1\n")
    assert meter.read() == pytest.approx(3.5)
    meter.close()


def test_run_delay_meter_is_unavailable_without_proc(tmp_path: Path) -> None:
    meter = RunDelayMeter(tmp_path / "missing")
    assert not meter.available and meter.read() is None


def test_run_delay_meter_reads_this_process() -> None:
    meter = RunDelayMeter()
    if not meter.available:
        pytest.skip("no /proc/self/task/*/schedstat on this system")
    first = meter.read()
    second = meter.read()
    assert first is not None and second is not None and second >= 0
