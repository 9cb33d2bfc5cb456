"""In-process cost of the metrics on the request path (no server, no sockets).

Runs the exact calls the data plane, the batcher and the worker channel make for each request
and each batch (``FrontendMetrics.observe_inference``, ``VersionSeries.request`` /
``queue_wait`` / ``batch_formed`` / ``worker_timings``, ``count_response``) and prints the
microseconds they add per request for a given batch size, next to the per-request budget
that a throughput figure implies (``--rps``, default: the MLP batch-8 c=32 figure of
docs/performance.md). Usage::

    python benchmarks/metrics_hot_path.py [--batch 8] [--requests 200000] [--rps 9662]
"""

from __future__ import annotations

import argparse
import time

from torchwick.handlers.messages import BatchTimings
from torchwick.server.observability.metrics import FrontendMetrics


def run(batch: int, requests: int, mode: str) -> float:
    """Seconds per request spent in metrics calls."""
    metrics = FrontendMetrics("bench", mode=mode)
    series = metrics.phases.series("mlp", "1.0") if metrics.phases is not None else None
    timings = BatchTimings(0.0001, 0.0003, 0.00005, 0.00002, 0.0005)
    # The data plane's per-request lookup of the version's observer.
    observers = {("mlp", "1.0"): series}
    started = time.perf_counter()
    for index in range(requests):
        metrics.count_response(200)
        metrics.observe_inference("mlp", None, 450)
        if series is not None:
            observer = observers.get(("mlp", "1.0"))
            assert observer is series
            series.request(0.00045)
            series.queue_wait(0.00003)
            if index % batch == 0:
                series.batch_formed(batch, 8, 0.00004)
                series.worker_timings(timings, 0.0006)
    return (time.perf_counter() - started) / requests


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--rps", type=float, default=9662.0)
    args = parser.parse_args()
    budget_us = 1e6 / args.rps
    baseline = min(run(args.batch, args.requests, "legacy") for _ in range(3))
    full = min(run(args.batch, args.requests, "prometheus") for _ in range(3))
    added = (full - baseline) * 1e6
    print(f"counters only (legacy mode): {baseline * 1e6:.3f} us/request")
    print(f"counters + phase histograms:  {full * 1e6:.3f} us/request (batch {args.batch})")
    print(
        f"histograms add {added:.3f} us/request = {100 * added / budget_us:.2f}% of the "
        f"{budget_us:.1f} us a request may take at {args.rps:.0f} req/s"
    )


if __name__ == "__main__":
    main()
