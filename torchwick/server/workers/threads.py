"""Intra-op threads per batch, adapted to how long batches take.

A worker's thread budget (cores / workers) pays off for heavy models: a ResNet-18 forward on
two threads takes about half the time of one. For tiny models it backfires: each small GEMM
wakes a second OpenMP thread that spins on a core the frontend needs, and on a 2-core machine
an MLP served with two threads ran at about 60% of the throughput it reaches with one.

``AdaptiveThreads`` watches a moving average of batch times. Batches shorter than
``small_s`` run on one thread; once one-thread batches grow past ``small_s`` times the budget
(the hysteresis keeps it from flapping), the full budget comes back. It is used only when the
operator did not fix ``worker_threads`` (the LOAD frame's ``adaptive_threads``). Switching
calls ``torch.set_num_threads``, which keeps OpenMP's pool and is cheap; it happens only on a
change of regime.
"""

from __future__ import annotations

from collections.abc import Callable

#: Batches shorter than this (seconds, moving average) gain nothing from more threads.
SMALL_BATCH_S = 0.002
#: Weight of the newest batch in the moving average.
SMOOTHING = 0.2


class AdaptiveThreads:
    """Chooses 1 thread or ``budget`` threads from observed batch times."""

    def __init__(
        self,
        budget: int,
        set_threads: Callable[[int], None],
        *,
        small_s: float = SMALL_BATCH_S,
        smoothing: float = SMOOTHING,
    ) -> None:
        self.budget = max(1, budget)
        self.threads = self.budget
        self._set_threads = set_threads
        self._small_s = small_s
        self._smoothing = smoothing
        self._average: float | None = None

    def observe(self, elapsed_s: float) -> None:
        """Record one batch's duration; switch threads when the regime changed."""
        average = self._average
        average = (
            elapsed_s if average is None else average + self._smoothing * (elapsed_s - average)
        )
        self._average = average
        if self.threads > 1 and average < self._small_s:
            self._switch(1)
        elif self.threads == 1 and average > self._small_s * self.budget:
            self._switch(self.budget)

    def _switch(self, threads: int) -> None:
        self._set_threads(threads)
        self.threads = threads
        # Batch times on the new setting are not comparable with the old average.
        self._average = None
