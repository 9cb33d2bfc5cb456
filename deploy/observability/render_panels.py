"""Render the dashboard's main panels with matplotlib from a real server's /metrics.

Used for docs/images/observability-dashboard.png where no Prometheus + Grafana is at hand:
it starts a real torchwick server (the test harness's ``running_server``) with a TorchScript
MLP (``batchSize`` 8), drives bounded traffic at rising concurrency from threads on
loopback, scrapes ``/metrics`` every ``--step`` seconds, and computes what the PromQL of
``grafana-dashboard.json`` would: rates from counter deltas and ``histogram_quantile`` from
bucket deltas (linear interpolation inside the bucket, as Prometheus does).
Needs matplotlib (not a torchwick dependency). Run from the repository root::

    python deploy/observability/render_panels.py --out docs/images/observability-dashboard.png
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

Scrape = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Scrape:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    out: Scrape = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _series(scr: Scrape, name: str, **match: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        labels: value
        for (n, labels), value in scr.items()
        if n == name and all(dict(labels).get(k) == v for k, v in match.items())
    }


def quantile(q: float, before: Scrape, after: Scrape, name: str, model: str) -> float:
    """histogram_quantile over the bucket increase between two scrapes (NaN: no samples)."""
    buckets: dict[float, float] = defaultdict(float)
    for labels, value in _series(after, f"{name}_bucket", model_name=model).items():
        le = dict(labels)["le"]
        buckets[math.inf if le == "+Inf" else float(le)] += value - before.get(
            (f"{name}_bucket", labels), 0.0
        )
    bounds = sorted(buckets)
    total = buckets[math.inf] if bounds else 0.0
    if total <= 0:
        return math.nan
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == math.inf:
                return lower
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = bound, count
    return lower


def rate(before: Scrape, after: Scrape, name: str, seconds: float, **match: str) -> float:
    now = sum(_series(after, name, **match).values())
    then = sum(_series(before, name, **match).values())
    return (now - then) / seconds


def drive(url: str, stop: threading.Event, concurrency: list[int]) -> None:
    body = [0.25] * 64

    def client() -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            while not stop.is_set():
                http.post("/predictions/mlp", json=body)

    threads: list[threading.Thread] = []
    for level in concurrency:
        while len(threads) < level:
            thread = threading.Thread(target=client, daemon=True)
            thread.start()
            threads.append(thread)
        stop.wait(6)
    stop.set()
    for thread in threads:
        thread.join()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--step", type=float, default=2.0)
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from tests.integration.server import model_handlers as handlers
    from tests.support.models import MLP, save_torchscript
    from tests.support.server import ServerOptions, build_archive, running_server

    root = Path(tempfile.mkdtemp(prefix="twdash"))
    store = root / "model_store"
    serialized = save_torchscript(MLP().eval(), root / "mlp", torch.zeros(1, 64))
    build_archive(
        store,
        "mlp",
        handlers.MLP,
        serialized_file=root / "mlp" / serialized,
        config={"batchSize": 8, "minWorkers": 1, "maxWorkers": 1},
    )
    options = ServerOptions(
        load_models="mlp.mar", disable_token_auth=True, config={"metric_time_interval": "2"}
    )
    with running_server(root, options) as server:
        stop = threading.Event()
        levels = [1, 2, 4, 8]
        driver = threading.Thread(
            target=drive, args=(server.inference_url, stop, levels), daemon=True
        )
        scrapes = [(time.monotonic(), scrape(server.metrics_url))]
        driver.start()
        while driver.is_alive():
            time.sleep(args.step)
            scrapes.append((time.monotonic(), scrape(server.metrics_url)))
        driver.join()
    t0 = scrapes[0][0]
    xs, panels = [], defaultdict(list)
    for (t1, s1), (t2, s2) in itertools.pairwise(scrapes):
        dt = t2 - t1
        xs.append(t2 - t0)
        panels["rps"].append(rate(s1, s2, "torchwick_request_latency_seconds_count", dt))
        for q in (0.5, 0.95, 0.99):
            value = quantile(q, s1, s2, "torchwick_request_latency_seconds", "mlp")
            panels[f"e2e p{int(q * 100)}"].append(value * 1e3)
        for phase in ("queue_wait", "worker_transfer", "handler_inference", "handler_preprocess"):
            value = quantile(0.95, s1, s2, f"torchwick_{phase}_seconds", "mlp")
            panels[phase].append(value * 1e3)
        sizes = rate(s1, s2, "torchwick_batch_size_sum", dt)
        batches = rate(s1, s2, "torchwick_batch_size_count", dt)
        panels["batch"].append(sizes / batches if batches else math.nan)
        cpu = _series(s2, "CPUUtilization")
        panels["cpu"].append(next(iter(cpu.values()), math.nan))
    fig, axes = plt.subplots(2, 2, figsize=(13, 7.5))
    fig.suptitle("torchwick: MLP (batchSize 8), concurrency 1 -> 2 -> 4 -> 8, from /metrics")
    ax = axes[0][0]
    ax.plot(xs, panels["rps"], label="requests/s")
    ax.set_title("Traffic (requests/s)")
    ax = axes[0][1]
    for key in ("e2e p50", "e2e p95", "e2e p99"):
        ax.plot(xs, panels[key], label=key)
    ax.set_title("End-to-end latency (ms)")
    ax = axes[1][0]
    for key in ("queue_wait", "worker_transfer", "handler_preprocess", "handler_inference"):
        ax.plot(xs, panels[key], label=f"{key} p95")
    ax.set_title("Latency per phase, p95 (ms)")
    ax = axes[1][1]
    ax.plot(xs, panels["batch"], label="mean batch size")
    ax2 = ax.twinx()
    ax2.plot(xs, panels["cpu"], color="grey", linestyle="--", label="host CPU %")
    ax.set_title("Batch size and host CPU")
    ax2.legend(loc="lower right", fontsize=8)
    for row in axes:
        for a in row:
            a.set_xlabel("seconds")
            a.grid(alpha=0.3)
            a.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out} from {len(scrapes)} scrapes")


if __name__ == "__main__":
    main()
