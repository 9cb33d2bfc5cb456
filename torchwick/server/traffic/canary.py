"""The canary state machine: ramp a candidate through steps, promote or roll back.

Time comes only from the clock the caller passes in (``now``, monotonic seconds), so tests
drive it with a fake clock. States: ``ramping`` (at ``steps[step]`` percent), ``promoted``
(the candidate passed every step) and ``rolled_back`` (a check failed; ``reason`` says which).

A step's window starts when the step does. While ramping, every outcome recorded is checked:

- error rate, at once: as soon as the candidate has ``min_requests`` outcomes in the window,
  its error rate may exceed the baseline's by at most ``max_error_rate_delta``;
- p99 latency, at the end of the window: the candidate's p99 may be at most
  ``max_p99_ratio`` times the baseline's.

The baseline's numbers come from the same window; when the baseline saw no request in it
(a 100% step) the last window in which it did serves instead (no reference: error rate 0,
p99 not checked). A window that ends before the candidate saw ``min_requests`` is extended
until it has. Passing the last step promotes the candidate (the last step need not be 100).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from .policy import CanarySpec

#: Latency samples kept per arm and window; beyond this the oldest slots are overwritten.
MAX_SAMPLES = 8192


class CanaryState(enum.Enum):
    """Where a canary is."""

    RAMPING = "ramping"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"


@dataclass(frozen=True, slots=True)
class Transition:
    """A change the canary made: ``advanced`` to a step, ``promoted`` or ``rolled_back``."""

    kind: str
    step: int
    percent: float
    reason: str


class _Window:
    __slots__ = ("errors", "latencies", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.latencies: list[float] = []

    def add(self, error: bool, latency_s: float) -> None:
        if len(self.latencies) < MAX_SAMPLES:
            self.latencies.append(latency_s)
        else:
            self.latencies[self.requests % MAX_SAMPLES] = latency_s
        self.requests += 1
        self.errors += error

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def p99(self) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


class Canary:
    """One running canary (see the module docs). Only the event loop calls it."""

    def __init__(self, spec: CanarySpec, now: float) -> None:
        self.spec = spec
        self.state = CanaryState.RAMPING
        self.step = 0
        self.reason = ""
        self.window_start = now
        self._candidate = _Window()
        self._baseline = _Window()
        self._reference: tuple[float, float | None] | None = None

    @property
    def percent(self) -> float:
        """The candidate's share now, in percent."""
        if self.state is CanaryState.PROMOTED:
            return 100.0
        if self.state is CanaryState.ROLLED_BACK:
            return 0.0
        return self.spec.steps[self.step]

    def weights(self) -> tuple[tuple[str, float], ...]:
        """The split the canary asks for now (zero weights left out)."""
        share = self.percent
        pairs = ((self.spec.candidate, share), (self.spec.baseline, 100.0 - share))
        return tuple((v, w) for v, w in pairs if w > 0)

    def record(self, version: str, error: bool, latency_s: float, now: float) -> Transition | None:
        """Count one outcome of a request the canary routed; returns a transition if any."""
        if self.state is not CanaryState.RAMPING:
            return None
        if version == self.spec.candidate:
            self._candidate.add(error, latency_s)
        elif version == self.spec.baseline:
            self._baseline.add(error, latency_s)
        else:
            return None
        breach = self._error_breach()
        if breach is not None:
            return self._roll_back(breach)
        return self.tick(now)

    def tick(self, now: float) -> Transition | None:
        """Close the window if its time is up and the candidate saw enough requests."""
        if self.state is not CanaryState.RAMPING:
            return None
        if now - self.window_start < self.spec.window_s:
            return None
        if self._candidate.requests < self.spec.min_requests:
            return None
        breach = self._error_breach() or self._latency_breach()
        if breach is not None:
            return self._roll_back(breach)
        if self._baseline.requests:
            self._reference = (self._baseline.error_rate, self._baseline.p99())
        self._candidate, self._baseline = _Window(), _Window()
        self.window_start = now
        if self.step + 1 >= len(self.spec.steps):
            self.state = CanaryState.PROMOTED
            self.reason = f"passed every step ({self._steps_text()})"
            return Transition("promoted", self.step, 100.0, self.reason)
        self.step += 1
        return Transition("advanced", self.step, self.percent, f"step {self.step - 1} passed")

    def counters(self) -> dict[str, object]:
        """The live window numbers, for describe."""
        return {
            "state": self.state.value,
            "step": self.step,
            "percent": self.percent,
            "reason": self.reason,
            "window": {
                "candidate": _window_json(self._candidate),
                "baseline": _window_json(self._baseline),
            },
        }

    # -- checks ----------------------------------------------------------------------------

    def _baseline_numbers(self) -> tuple[float, float | None]:
        if self._baseline.requests:
            return self._baseline.error_rate, self._baseline.p99()
        return self._reference or (0.0, None)

    def _error_breach(self) -> str | None:
        candidate = self._candidate
        if candidate.requests < self.spec.min_requests:
            return None
        base_rate, _ = self._baseline_numbers()
        if candidate.error_rate - base_rate > self.spec.max_error_rate_delta:
            return (
                f"error rate {candidate.error_rate:.3f} over {candidate.requests} requests "
                f"exceeds the baseline's {base_rate:.3f} by more than "
                f"{self.spec.max_error_rate_delta}"
            )
        return None

    def _latency_breach(self) -> str | None:
        _, base_p99 = self._baseline_numbers()
        p99 = self._candidate.p99()
        if base_p99 is None or p99 is None or base_p99 <= 0:
            return None
        if p99 > self.spec.max_p99_ratio * base_p99:
            return (
                f"p99 latency {p99 * 1000:.1f} ms exceeds {self.spec.max_p99_ratio} x the "
                f"baseline's {base_p99 * 1000:.1f} ms"
            )
        return None

    def _roll_back(self, why: str) -> Transition:
        percent = self.percent
        self.state = CanaryState.ROLLED_BACK
        self.reason = f"at step {self.step} ({percent:g}%): {why}"
        return Transition("rolled_back", self.step, percent, self.reason)

    def _steps_text(self) -> str:
        return " -> ".join(f"{s:g}%" for s in self.spec.steps)


def _window_json(window: _Window) -> dict[str, object]:
    return {
        "requests": window.requests,
        "errors": window.errors,
        "p99_ms": None if (p := window.p99()) is None else round(p * 1000, 3),
    }
