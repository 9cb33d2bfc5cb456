"""What the batcher reports and whom it reports to: its counters, the observer and tracer
protocols it calls as batches form and finish, and TorchServe's "no worker" message.

Kept apart from ``batcher`` so that observers (``observability``, ``plane_hooks``) depend on
these small types, not on the queue itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from torchwick.handlers.messages import BatchTimings


def no_worker_message(model: str, version: str | None = None) -> str:
    """TorchServe's 503 text for "no worker" and "queue full" (the quirky quote is theirs)."""
    subject = f'Model "{model}"' if version is None else f'Model "{model}" Version {version}"'
    return (
        f"{subject} has no worker to serve inference request. Please use scale workers API to "
        "add workers. If this is a sequence inference, please check if it is closed, or "
        "expired; or exceeds maxSequenceJobQueueSize"
    )


class BatchObserver(Protocol):
    """Receives queue timing as batches form (``observability.phases.VersionSeries``)."""

    #: The worker's phase times of the version's last batch (set by the worker channel
    #: right before ``run_batch`` returns, so ``_execute`` reads its own batch's).
    last_timings: BatchTimings | None

    def queue_wait(self, seconds: float, /) -> None:
        """One request's time from enqueue to batch formation."""

    def batch_formed(self, size: int, limit: int, formation_s: float) -> None:
        """A batch of ``size`` (at most ``limit``) formed; its oldest request waited
        ``formation_s``."""


@dataclass(frozen=True, slots=True)
class BatcherStats:
    """Counters since the batcher started; ``queue_time_s`` sums every dispatched request's
    time from enqueue to batch formation (for the queue latency metric)."""

    requests: int
    batches: int
    rejected: int
    dropped: int
    pending: int
    queue_time_s: float
    #: Requests answered 504 because they waited in the queue past ``queue_timeout_s``.
    expired: int = 0
    #: The pool is crash-looping (its last loads failed; it keeps retrying).
    crash_looping: bool = False


class BatchTracer(Protocol):
    """Adds each traced request's batch phases (``observability.tracing.Tracing``)."""

    def batch(
        self,
        traces: Sequence[tuple[Any, float, float]],
        sent_at: float,
        done_at: float,
        timings: BatchTimings | None,
    ) -> None:
        """``(trace, enqueued_at, formed_at)`` per traced request of one finished batch."""
