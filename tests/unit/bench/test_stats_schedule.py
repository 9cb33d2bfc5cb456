"""Percentiles, summaries and arrival schedules of ``torchwick bench``."""

from __future__ import annotations

import math
import random
from itertools import islice

import pytest

from torchwick.bench.schedule import poisson_arrivals, uniform_arrivals
from torchwick.bench.stats import LatencySummary, median, percentile, ratio


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.9) == 90.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile(values, 0.0) == 1.0
    # No interpolation: with 3 values, p50 is the second and p99 the third.
    assert percentile([1.0, 2.0, 10.0], 0.5) == 2.0
    assert percentile([1.0, 2.0, 10.0], 0.99) == 10.0
    assert math.isnan(percentile([], 0.5))
    with pytest.raises(ValueError, match="fraction"):
        percentile(values, 1.5)


def test_latency_summary_is_in_milliseconds() -> None:
    summary = LatencySummary.of([0.003, 0.001, 0.002, 0.010])
    assert summary.count == 4
    assert summary.p50 == pytest.approx(2.0)
    assert summary.p99 == pytest.approx(10.0)
    assert summary.max == pytest.approx(10.0)
    assert summary.mean == pytest.approx(4.0)
    empty = LatencySummary.of([])
    assert empty.count == 0 and math.isnan(empty.p50) and math.isnan(empty.max)


def test_median_and_ratio_skip_missing_values() -> None:
    assert median([3.0, math.nan, 1.0, 2.0]) == 2.0
    assert math.isnan(median([math.nan]))
    assert ratio(6.0, 3.0) == 2.0
    assert math.isnan(ratio(1.0, 0.0))
    assert math.isnan(ratio(math.nan, 1.0))


def test_poisson_arrivals_follow_the_injected_generator() -> None:
    times = list(islice(poisson_arrivals(50.0, 10.0, random.Random(7)), 5))
    reference = random.Random(7)
    expected, at = [], 10.0
    for _ in range(5):
        at += reference.expovariate(50.0)
        expected.append(at)
    assert times == expected
    # The same seed gives the same schedule; another seed another one.
    assert times == list(islice(poisson_arrivals(50.0, 10.0, random.Random(7)), 5))
    assert times != list(islice(poisson_arrivals(50.0, 10.0, random.Random(8)), 5))


def test_poisson_gaps_have_the_rate_as_mean_and_exponential_spread() -> None:
    times = list(islice(poisson_arrivals(200.0, 0.0, random.Random(1)), 20_000))
    gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    assert all(g > 0 for g in gaps)
    mean = sum(gaps) / len(gaps)
    assert mean == pytest.approx(1 / 200.0, rel=0.03)
    # Exponential: P(gap > mean) = 1/e.
    above = sum(1 for g in gaps if g > 1 / 200.0) / len(gaps)
    assert above == pytest.approx(math.exp(-1), abs=0.02)


def test_uniform_arrivals_and_bad_rates() -> None:
    assert list(islice(uniform_arrivals(4.0, 1.0), 3)) == [1.25, 1.5, 1.75]
    with pytest.raises(ValueError, match="positive"):
        next(poisson_arrivals(0.0, 0.0, random.Random(0)))
    with pytest.raises(ValueError, match="positive"):
        next(uniform_arrivals(-1.0, 0.0))
