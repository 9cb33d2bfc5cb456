"""Open-loop arrival schedules: when each request is due, independent of the server.

A Poisson process at ``rate`` requests per second has exponentially distributed gaps with
mean ``1 / rate``. The schedule is drawn from an injected ``random.Random`` so a seed gives the
same arrivals every run (and tests can check them exactly).
"""

from __future__ import annotations

import random
from collections.abc import Iterator


def poisson_arrivals(rate: float, start: float, rng: random.Random) -> Iterator[float]:
    """Endless arrival times (seconds, on the caller's clock) of a Poisson process after
    ``start``. Raises ``ValueError`` for a rate that is not positive."""
    if not rate > 0:
        raise ValueError(f"rate must be positive, not {rate}")
    at = start
    while True:
        at += rng.expovariate(rate)
        yield at


def uniform_arrivals(rate: float, start: float) -> Iterator[float]:
    """Endless arrivals exactly ``1 / rate`` apart after ``start`` (a fixed-rate schedule)."""
    if not rate > 0:
        raise ValueError(f"rate must be positive, not {rate}")
    index = 0
    while True:
        index += 1
        yield start + index / rate
