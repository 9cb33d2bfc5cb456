"""Latency percentiles and the figures of one measured point.

Percentiles are nearest-rank: the value at rank ``ceil(q * n)`` of the ascending sample, so a
reported p99 is always a latency some request really had (no interpolation between two).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

#: The percentiles every point reports (as fractions), besides the maximum.
QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.99)


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending sequence; NaN when it is empty.

    Raises ``ValueError`` for a fraction outside [0, 1].
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], not {fraction}")
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass(frozen=True)
class LatencySummary:
    """Percentiles of one point's latencies, in milliseconds (NaN when nothing succeeded)."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float
    mean: float

    @classmethod
    def of(cls, latencies_s: Sequence[float]) -> LatencySummary:
        ordered = sorted(v * 1e3 for v in latencies_s)
        if not ordered:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan)
        return cls(
            len(ordered),
            percentile(ordered, 0.5),
            percentile(ordered, 0.9),
            percentile(ordered, 0.99),
            ordered[-1],
            statistics.fmean(ordered),
        )


def median(values: Sequence[float]) -> float:
    """Median of the finite values; NaN when there are none."""
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``; NaN when either is not finite or the denominator is 0."""
    if not (math.isfinite(numerator) and math.isfinite(denominator)) or denominator == 0:
        return math.nan
    return numerator / denominator
