"""AdaptiveThreads: one thread for tiny batches, the budget back for heavy ones."""

from __future__ import annotations

from torchwick.server.workers.threads import AdaptiveThreads


def test_tiny_batches_drop_to_one_thread_and_heavy_ones_restore_the_budget() -> None:
    calls: list[int] = []
    threads = AdaptiveThreads(2, calls.append, small_s=0.002)
    assert threads.threads == 2
    for _ in range(3):
        threads.observe(0.0002)
    assert threads.threads == 1 and calls == [1]
    # Between small_s and small_s * budget: hysteresis keeps one thread.
    for _ in range(5):
        threads.observe(0.003)
    assert threads.threads == 1
    for _ in range(5):
        threads.observe(0.030)
    assert threads.threads == 2 and calls == [1, 2]


def test_heavy_batches_keep_the_budget() -> None:
    calls: list[int] = []
    threads = AdaptiveThreads(4, calls.append)
    for _ in range(10):
        threads.observe(0.025)
    assert threads.threads == 4 and calls == []
