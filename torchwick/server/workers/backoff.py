"""Restart pacing for a worker slot: capped exponential backoff that forgets healthy runs."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """Delay ``initial_s * factor**(n-1)`` after the n-th consecutive failure, at most ``cap_s``.

    A worker that stayed up for ``reset_after_s`` before failing counts as healthy: the next
    failure starts the sequence again from ``initial_s``.
    """

    initial_s: float = 0.1
    factor: float = 2.0
    cap_s: float = 30.0
    reset_after_s: float = 60.0


class Backoff:
    """The failure history of one worker slot.

    Call ``started()`` when a worker becomes ready and ``failed()`` when it dies or fails to
    load; ``failed()`` returns how long to wait before the next start. ``clock`` is injectable
    (monotonic seconds) so tests need no real time.
    """

    __slots__ = ("_clock", "_failures", "_policy", "_started_at")

    def __init__(self, policy: BackoffPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self._policy = policy
        self._clock = clock
        self._failures = 0
        self._started_at: float | None = None

    @property
    def failures(self) -> int:
        """Consecutive failures counted so far (0 after a reset)."""
        return self._failures

    def started(self) -> None:
        """A worker of this slot is up and serving from now on."""
        self._started_at = self._clock()

    def failed(self) -> float:
        """Record a failure; return the delay in seconds before the next start."""
        policy = self._policy
        started_at = self._started_at
        if started_at is not None and self._clock() - started_at >= policy.reset_after_s:
            self._failures = 0
        self._started_at = None
        self._failures += 1
        # Compute by repeated multiplication so a long failure streak cannot overflow a float.
        delay = policy.initial_s
        for _ in range(self._failures - 1):
            delay *= policy.factor
            if delay >= policy.cap_s:
                return policy.cap_s
        return min(delay, policy.cap_s)

    def reset(self) -> None:
        """Forget the history (for example after an operator asked to scale again)."""
        self._failures = 0
        self._started_at = None
