"""Intra-op threads per batch, adapted to how long batches take and to the CPU the worker gets.

A worker's thread budget (cores / workers) pays off for heavy models on cores it has to itself:
a ResNet-18 forward on two threads takes about half the time of one. It backfires in two cases,
and ``AdaptiveThreads`` drops to one thread in both:

- **Tiny batches.** Each small GEMM wakes a second OpenMP thread that spins on a core the
  frontend needs; on a 2-core machine an MLP served with two threads ran at about 60% of the
  throughput it reaches with one. Batches whose moving average is shorter than ``small_s`` run
  on one thread; once one-thread batches grow past ``small_s`` times the budget (hysteresis),
  the budget comes back.
- **Contended cores.** Every parallel region ends in a barrier, so a region lasts as long as
  its slowest thread. When another process shares one of the cores, the thread on it is
  descheduled for whole time slices while the others wait at the barrier (spinning, with
  OpenMP's default wait policy): a ResNet-18 batch then cost about 3-4 times its quiet CPU time
  and throughput fell below a single thread's. The worker measures, per batch, the time its
  threads spent runnable but not running (the run-queue delay of ``/proc/self/task/*/
  schedstat``, see ``cpu_share``); when that is more than ``contended_share`` of the threads'
  wall time (moving average over at least ``min_batches`` batches), it drops to one thread,
  which has no barrier to wait at. It probes the budget again after ``probe_after_s``; a probe
  that meets contention again doubles the wait (up to ``max_probe_after_s``), one that finds
  the cores free, or the budget faster per sample than one thread was, keeps the budget.

It is used only when the operator did not fix ``worker_threads`` (the LOAD frame's
``adaptive_threads``). Switching calls ``torch.set_num_threads``, which keeps OpenMP's pool and
is cheap; it happens only on a change of regime. The clock and the wait meter are injected
(tests drive them).

The spin itself is bounded too (``omp_wait_environment``): GNU OpenMP, the runtime of torch's
Linux CPU wheels, spins 300,000 times at a barrier before it sleeps; ``GOMP_SPINCOUNT`` set
before torch is imported shortens that, so a thread whose sibling was descheduled soon yields
its core instead of burning it.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

T = TypeVar("T")
logger = logging.getLogger(__name__)

#: Batches shorter than this (seconds, moving average) gain nothing from more threads.
SMALL_BATCH_S = 0.002
#: Weight of the newest batch in the moving averages.
SMOOTHING = 0.2
#: Share of the threads' wall time spent waiting for a CPU beyond which the cores are contended.
CONTENDED_SHARE = 0.25
#: Batches observed on a setting before its contention is judged.
MIN_BATCHES = 3
#: Seconds on one thread (because of contention) before the budget is tried again, and the most
#: that wait grows to after failed probes.
PROBE_AFTER_S = 5.0
MAX_PROBE_AFTER_S = 60.0
#: A probe keeps the budget when its time per sample is below this fraction of one thread's.
FASTER = 0.9
#: Variables that already choose OpenMP's wait behaviour: the operator's choice wins.
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def omp_wait_environment(spin_count: int, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables to add to ``environ`` for ``spin_count`` (empty when there is nothing to do).

    ``spin_count`` below 0 means OpenMP's default; a wait variable already in ``environ``
    means the operator chose, and is kept.
    """
    if spin_count < 0 or any(name in environ for name in WAIT_VARIABLES):
        return {}
    return {"GOMP_SPINCOUNT": str(spin_count)}


class Regime(enum.Enum):
    """Why the worker runs the number of threads it runs."""

    FULL = "full"
    TINY = "tiny"
    CONTENDED = "contended"


class _Average:
    """An exponential moving average that knows how many values it has seen."""

    def __init__(self, smoothing: float) -> None:
        self._smoothing = smoothing
        self.value: float | None = None
        self.count = 0

    def add(self, value: float) -> float:
        current = self.value
        self.value = value if current is None else current + self._smoothing * (value - current)
        self.count += 1
        return self.value

    def reset(self) -> None:
        self.value = None
        self.count = 0


class AdaptiveThreads:
    """Chooses 1 thread or ``budget`` threads from observed batch times and CPU waits."""

    def __init__(
        self,
        budget: int,
        set_threads: Callable[[int], None],
        *,
        clock: Callable[[], float] = time.perf_counter,
        waits: Callable[[], float | None] | None = None,
        small_s: float = SMALL_BATCH_S,
        smoothing: float = SMOOTHING,
        contended_share: float = CONTENDED_SHARE,
        min_batches: int = MIN_BATCHES,
        probe_after_s: float = PROBE_AFTER_S,
        max_probe_after_s: float = MAX_PROBE_AFTER_S,
    ) -> None:
        self.budget = max(1, budget)
        self.threads = self.budget
        self.regime = Regime.FULL
        #: Switches made because of contention (drops) and probes of the budget since.
        self.contended_drops = 0
        self.probes = 0
        self._set_threads = set_threads
        self._clock = clock
        self._waits = waits
        self._small_s = small_s
        self._contended_share = contended_share
        self._min_batches = max(1, min_batches)
        self._first_probe_s = probe_after_s
        self._max_probe_after_s = max(probe_after_s, max_probe_after_s)
        self._probe_after_s = probe_after_s
        self._probe_at: float | None = None
        self._probing = False
        self._elapsed = _Average(smoothing)
        self._waiting = _Average(smoothing)
        self._per_sample = _Average(smoothing)
        #: Seconds per sample on one thread while contended (what a probe must beat).
        self._single_per_sample: float | None = None

    @property
    def wants_waits(self) -> bool:
        """Whether ``observe`` uses ``waiting_s`` now (tiny batches do not: skip measuring)."""
        return self.regime is not Regime.TINY

    def run(self, call: Callable[[], T], samples: int) -> T:
        """Run one batch (``call``), timing it and its threads' waits, then ``observe`` it.

        A batch that raises is not observed (its time says nothing about the threads).
        """
        waits = self._waits if self.wants_waits else None
        before = waits() if waits is not None else None
        started = self._clock()
        result = call()
        elapsed = self._clock() - started
        waiting = None
        if waits is not None and before is not None:
            after = waits()
            # A thread that exited meanwhile takes its delay with it: never below zero.
            waiting = None if after is None else max(0.0, after - before)
        self.observe(elapsed, waiting, samples)
        return result

    def observe(self, elapsed_s: float, waiting_s: float | None = None, samples: int = 1) -> None:
        """Record one batch: its wall time, its threads' run-queue delay and its size.

        ``waiting_s`` is ``None`` where it cannot be measured; only the tiny-batch rule then
        applies.
        """
        elapsed = self._elapsed.add(elapsed_s)
        per_sample = self._per_sample.add(elapsed_s / max(1, samples))
        if self.regime is Regime.TINY:
            if elapsed > self._small_s * self.budget:
                self._switch(self.budget, Regime.FULL)
            return
        if self.threads > 1 and elapsed < self._small_s:
            self._probing = False
            self._switch(1, Regime.TINY)
            return
        if self.regime is Regime.CONTENDED:
            self._single_per_sample = per_sample
            probe_at = self._probe_at
            if probe_at is not None and self._clock() >= probe_at:
                self.probes += 1
                self._probing = True
                self._switch(self.budget, Regime.FULL)
            return
        if waiting_s is None or elapsed_s <= 0:
            return
        share = self._waiting.add(waiting_s / (elapsed_s * self.threads))
        if self._waiting.count < self._min_batches:
            return
        if share > self._contended_share and not self._faster_than_single(per_sample):
            logger.info(
                "threads %d -> 1: the worker's threads waited for a CPU %.0f%% of the time "
                "(cores contended); the budget is tried again in %g s",
                self.threads,
                100 * share,
                self._next_wait(),
            )
            self._drop_for_contention()
        elif self._probing:
            # The budget held up against one thread: contention is over, or the budget is
            # faster despite it (then one thread's time stays the bar it must keep beating).
            self._probing = False
            self._probe_after_s = self._first_probe_s
            if share <= self._contended_share:
                self._single_per_sample = None

    def _faster_than_single(self, per_sample: float) -> bool:
        single = self._single_per_sample
        return single is not None and per_sample < FASTER * single

    def _next_wait(self) -> float:
        if self._probing:
            return min(self._probe_after_s * 2, self._max_probe_after_s)
        return self._probe_after_s

    def _drop_for_contention(self) -> None:
        self._probe_after_s = self._next_wait()
        self._probing = False
        self.contended_drops += 1
        self._probe_at = self._clock() + self._probe_after_s
        self._single_per_sample = None
        self._switch(1, Regime.CONTENDED)

    def _switch(self, threads: int, regime: Regime) -> None:
        if threads != self.threads:
            self._set_threads(threads)
            self.threads = threads
        self.regime = regime
        # Batch times on the new setting are not comparable with the old averages.
        self._elapsed.reset()
        self._waiting.reset()
        self._per_sample.reset()


def apply_thread_budget(threads: int) -> None:
    """Size OpenMP, MKL and torch to ``threads`` (the LOAD frame's budget).

    The variables take effect only if set before OpenMP/MKL initialise, i.e. before torch is
    first imported in this process, which is why this runs at LOAD, ahead of any handler code;
    they are also inherited by processes the handler starts.
    """
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    # Only possible before any inter-op work has started; a fresh process has done none.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(threads)


def set_intra_op_threads(threads: int) -> None:
    """Change torch's intra-op threads (used by ``AdaptiveThreads``)."""
    import torch

    torch.set_num_threads(threads)
