"""Soak: a torchwick server under a mixed, partly hostile load for a long time; are its memory
and open files flat?

Run from the repository root::

    python benchmarks/soak.py --duration-s 1800      # the default: 30 minutes
    python benchmarks/soak.py --duration-s 180 --json soak.json

The server (a real one, with one ``echo`` worker, started as the tests start it) gets, from
``--clients`` threads, a loop of: good predictions, predictions with deep JSON, too many
multipart parts, oversized headers, unknown models, ``/ping``, metrics scrapes; and from one
more thread, connections that never send a byte and slowloris heads (closed by the server's
head deadline). Every ``--sample-s`` seconds it records the server process's RSS, the RSS of
its whole process tree, and its open file descriptors. At the end it prints the first and
last samples, the largest values, the growth between the median of the first and of the last
quarter of the run, and the answers by status (a 5xx, or a request without an answer, is
counted as an error). Exit status 1 when any error was seen.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from tests.integration.server import model_handlers as handlers  # noqa: E402
from tests.support.server import ServerOptions, build_archive, running_server  # noqa: E402


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo.extend(_children(current))
    return pids


def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def _sample(pid: int, started: float) -> dict[str, float]:
    return {
        "t_s": round(time.monotonic() - started, 1),
        "server_rss_mib": round(_rss(pid) / 2**20, 1),
        "tree_rss_mib": round(sum(_rss(p) for p in _tree(pid)) / 2**20, 1),
        "server_fds": _fds(pid),
    }


def _client_loop(base: str, headers: dict[str, str], stop: threading.Event, seen: Counter) -> None:
    deep = b"[" * 10_000 + b"]" * 10_000
    parts = b"".join(
        b'--b\r\ncontent-disposition: form-data; name="p"\r\n\r\nv\r\n' for _ in range(300)
    )
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        while not stop.is_set():
            calls = [
                lambda: client.post("/predictions/echo", content=b"hello"),
                lambda: client.post(
                    "/predictions/echo",
                    content=deep,
                    headers={"content-type": "application/json"},
                ),
                lambda: client.post(
                    "/predictions/echo",
                    content=parts + b"--b--\r\n",
                    headers={"content-type": "multipart/form-data; boundary=b"},
                ),
                lambda: client.get("/ping", headers={"x-big": "a" * 40_000}),
                lambda: client.post("/predictions/nosuchmodel", content=b"x"),
                lambda: client.get("/ping"),
            ]
            for call in calls:
                try:
                    status = call().status_code
                except httpx.HTTPError:
                    status = 0  # no answer
                seen[status] += 1


def _hostile_loop(port: int, stop: threading.Event, seen: Counter) -> None:
    while not stop.is_set():
        opened = []
        for index in range(50):
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                if index % 2:
                    sock.sendall(b"GET /ping HTTP/1.1\r\nhost: x\r\nx-slow: ")
                opened.append(sock)
            except OSError:
                seen["connect-failed"] += 1
        stop.wait(3.0)
        for sock in opened:
            sock.close()
        seen["hostile-rounds"] += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=float, default=1800.0)
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the samples and summary here")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="soak"))
    build_archive(root / "model_store", "echo", handlers.ECHO)
    options = ServerOptions(load_models="echo=echo.mar", config={"request_head_timeout_s": "2"})
    seen: Counter[object] = Counter()
    samples = []
    with running_server(root, options) as server:
        pid = server.process.pid
        port = int(server.inference_url.rsplit(":", 1)[1])
        stop = threading.Event()
        threads = [
            threading.Thread(
                target=_client_loop,
                args=(server.inference_url, server.auth("inference"), stop, seen),
                daemon=True,
            )
            for _ in range(args.clients)
        ]
        threads.append(threading.Thread(target=_hostile_loop, args=(port, stop, seen), daemon=True))
        started = time.monotonic()
        for thread in threads:
            thread.start()
        while time.monotonic() - started < args.duration_s:
            samples.append(_sample(pid, started))
            httpx.get(f"{server.metrics_url}/metrics", timeout=30)
            time.sleep(args.sample_s)
        stop.set()
        for thread in threads:
            thread.join(60)
        samples.append(_sample(pid, started))
        alive = server.alive()

    quarter = max(1, len(samples) // 4)
    summary: dict[str, object] = {"duration_s": args.duration_s, "samples": len(samples)}
    for key in ("server_rss_mib", "tree_rss_mib", "server_fds"):
        values = [s[key] for s in samples]
        summary[key] = {
            "first": values[0],
            "last": values[-1],
            "max": max(values),
            "growth_median_first_to_last_quarter": round(
                statistics.median(values[-quarter:]) - statistics.median(values[:quarter]), 1
            ),
        }
    errors = sum(n for status, n in seen.items() if isinstance(status, int) and status >= 500)
    errors += seen.get(0, 0)
    summary["answers"] = {str(k): v for k, v in sorted(seen.items(), key=str)}
    summary["errors"] = errors
    summary["server_alive_at_end"] = alive
    print(json.dumps(summary, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps({"summary": summary, "samples": samples}, indent=2))
    return 0 if errors == 0 and alive else 1


if __name__ == "__main__":
    raise SystemExit(main())
