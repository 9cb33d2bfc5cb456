"""Render the dashboard's panels with matplotlib from a real server, through Prometheus.

Used for docs/images/observability-dashboard.png where Grafana is not at hand: it starts a
real torchwick server (the test harness's ``running_server``) with a TorchScript MLP
(``batchSize`` 8), a real Prometheus (``--prometheus``, e.g. Debian's ``/usr/bin/prometheus``)
scraping its ``/metrics`` every second, drives bounded loopback traffic at rising
concurrency, then evaluates every query of ``grafana-dashboard.json`` with Prometheus'
``query_range`` API (``$model`` as ``.*``, ``$__rate_interval`` as ``--rate``) and draws the
panels. A query that returns no series is listed (the GPU panel has none without a GPU).
Without ``--prometheus`` it computes rates and ``histogram_quantile`` itself from its own
scrapes (same interpolation as Prometheus) for four of the panels.
Needs matplotlib (not a torchwick dependency). Run from the repository root::

    python deploy/observability/render_panels.py --prometheus /usr/bin/prometheus \
        --out docs/images/observability-dashboard.png
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import socket
import subprocess
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


DASHBOARD = Path(__file__).with_name("grafana-dashboard.json")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_prometheus(
    binary: str, target: str, workdir: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """A Prometheus scraping ``target`` (host:port) every second; returns it and its URL."""
    config = workdir / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: torchwick\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    port = _free_port()
    log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 - lives as long as the process
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("Prometheus did not become ready")


def query_panels(url: str, start: float, end: float, rate_window: str) -> list[dict[str, object]]:
    """Every dashboard panel with each query's series from Prometheus' query_range."""
    dashboard = json.loads(DASHBOARD.read_text())
    panels = []
    for panel in dashboard["panels"]:
        lines = []
        for target in panel["targets"]:
            expr = target["expr"].replace("$model", ".*").replace("$__rate_interval", rate_window)
            answer = httpx.get(
                f"{url}/api/v1/query_range",
                params={"query": expr, "start": start, "end": end, "step": 1},
                timeout=30,
            ).json()
            if answer.get("status") != "success":
                raise RuntimeError(f"query failed: {expr}: {answer}")
            for series in answer["data"]["result"]:
                legend = target["legendFormat"]
                for key, value in series["metric"].items():
                    legend = legend.replace("{{" + key + "}}", value)
                points = [(float(t) - start, float(v)) for t, v in series["values"]]
                lines.append((legend, points))
            if not answer["data"]["result"]:
                print(f"no series: {panel['title']}: {expr}")
        panels.append({"title": panel["title"], "unit": panel["fieldConfig"]["defaults"]["unit"],
                       "lines": lines})  # fmt: skip
    return panels


def draw_prometheus(panels: list[dict[str, object]], out: Path, title: str) -> None:
    import matplotlib.pyplot as plt

    scale = {"s": (1e3, "ms"), "bytes": (1 / 2**20, "MiB")}
    rows = (len(panels) + 2) // 3
    fig, axes = plt.subplots(rows, 3, figsize=(18, 3.6 * rows))
    fig.suptitle(title)
    for ax, panel in zip(axes.flat, panels, strict=False):
        factor, unit = scale.get(str(panel["unit"]), (1.0, str(panel["unit"])))
        lines = panel["lines"]
        assert isinstance(lines, list)
        for legend, points in lines:
            values = [v * factor if not math.isnan(v) else v for _, v in points]
            ax.plot([t for t, _ in points], values, label=legend)
        ax.set_title(f"{panel['title']} [{unit}]" if lines else f"{panel['title']} (no data)")
        ax.grid(alpha=0.3)
        if lines:
            ax.legend(loc="upper left", fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    for ax in list(axes.flat)[: len(panels)]:
        ax.set_xlabel("seconds since the traffic started", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--step", type=float, default=2.0)
    parser.add_argument("--prometheus", help="a Prometheus binary to evaluate the dashboard")
    parser.add_argument("--rate", default="5s", help="what $__rate_interval stands for")
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
        prometheus = None
        if args.prometheus:
            target = server.metrics_url.split("//", 1)[1]
            prometheus, prom_url = start_prometheus(args.prometheus, target, root)
            time.sleep(2)  # let a first scrape happen before traffic starts
        began = time.time()
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
        if prometheus is not None:
            time.sleep(3)  # the last scrapes
            try:
                panels = query_panels(prom_url, began, time.time(), args.rate)
            finally:
                prometheus.terminate()
                prometheus.wait(30)
            title = (
                "grafana-dashboard.json's queries evaluated by a real Prometheus over a real "
                "torchwick run: MLP (batchSize 8), concurrency 1 -> 2 -> 4 -> 8, 6 s each"
            )
            draw_prometheus(panels, args.out, title)
            print(f"wrote {args.out} from Prometheus")
            return
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
