"""Restart backoff with an injected clock: doubling, cap, reset after a healthy run."""

from __future__ import annotations

import pytest

from torchwick.server.workers.backoff import Backoff, BackoffPolicy


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_delays_double_up_to_the_cap() -> None:
    backoff = Backoff(BackoffPolicy(initial_s=0.1, factor=2.0, cap_s=30.0), FakeClock())
    delays = [backoff.failed() for _ in range(12)]
    assert delays[:5] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6])
    assert delays[-1] == 30.0
    assert max(delays) == 30.0
    assert backoff.failures == 12


def test_a_very_long_streak_stays_at_the_cap() -> None:
    backoff = Backoff(BackoffPolicy(), FakeClock())
    for _ in range(5000):
        delay = backoff.failed()
    assert delay == 30.0


def test_a_worker_that_served_long_enough_resets_the_sequence() -> None:
    clock = FakeClock()
    backoff = Backoff(BackoffPolicy(reset_after_s=60.0), clock)
    for _ in range(4):
        backoff.failed()
    backoff.started()
    clock.now += 59.0
    assert backoff.failed() == pytest.approx(1.6)  # died too early: keeps doubling
    backoff.started()
    clock.now += 60.0
    assert backoff.failed() == pytest.approx(0.1)  # served a minute: starts over
    assert backoff.failures == 1


def test_load_failures_without_a_start_never_reset() -> None:
    clock = FakeClock()
    backoff = Backoff(BackoffPolicy(reset_after_s=1.0), clock)
    backoff.failed()
    clock.now += 100.0
    assert backoff.failed() == pytest.approx(0.2)


def test_reset() -> None:
    backoff = Backoff(BackoffPolicy(), FakeClock())
    backoff.failed()
    backoff.failed()
    backoff.reset()
    assert backoff.failures == 0
    assert backoff.failed() == pytest.approx(0.1)
