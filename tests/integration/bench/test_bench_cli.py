"""``torchwick bench`` as a subprocess against real torchwick servers (short, bounded runs).

Two servers for the module, each with token authorization on (the secure default) and two
archives: ``echo`` answers its body, ``slow`` sleeps 0.8 s per request (for the time limit).
Every run here is a fraction of a second per point with small counts.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from PIL import Image

from tests.support.server import (
    ServerOptions,
    ServerProcess,
    build_archive,
    free_port,
    running_server,
)
from torchwick.bench.results import schema

ECHO = """
def handle(data, context):
    if data is None:
        return None
    return [row.get("data") or row.get("body") or b"" for row in data]
"""
SLOW = """
import time


def handle(data, context):
    if data is None:
        return None
    time.sleep(0.8)
    return [b"done" for _ in data]
"""
TORCHWICK = str(Path(sys.executable).parent / "torchwick")
#: Short points: a fraction of a second each.
SHORT = ["--warmup", "0.1", "--duration", "0.4", "--progress", "never"]
RUN_TIMEOUT_S = 120


def _server(root: Path) -> Iterator[ServerProcess]:
    store = root / "model_store"
    build_archive(store, "echo", ECHO)
    build_archive(store, "slow", SLOW)
    with running_server(root, ServerOptions(load_models="echo.mar,slow.mar")) as server:
        yield server


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from _server(tmp_path_factory.mktemp("bench-a"))


@pytest.fixture(scope="module")
def second(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from _server(tmp_path_factory.mktemp("bench-b"))


def bench(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TORCHWICK, "bench", *argv],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def _token(server: ServerProcess) -> str:
    return server.keys()["inference"]


def _load(path: Path) -> dict[str, object]:
    value: dict[str, object] = json.loads(path.read_text())
    jsonschema.validate(value, schema())
    return value


def test_closed_loop_sweep_with_token_json_and_plot(first: ServerProcess, tmp_path: Path) -> None:
    out_json, out_png = tmp_path / "run.json", tmp_path / "run.png"
    token = tmp_path / "token"
    token.write_text(_token(first) + "\n")
    url = f"{first.inference_url}/predictions/echo"
    result = bench(
        url, "--body", '{"x": 1}', "--content-type", "application/json",
        "--token-file", str(token), "--concurrency", "1,4", *SHORT,
        "--json", str(out_json), "--plot", str(out_png),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "A c=1 #1:" in result.stdout and "A c=4 #1:" in result.stdout
    doc = _load(out_json)
    assert doc["complete"] is True and doc["mode"] == "closed"
    points = doc["points"]
    assert isinstance(points, list) and [p["load"] for p in points] == [1, 4]
    for point in points:
        assert point["ok"] > 0 and point["errors"]["total"] == 0
        assert point["throughput_rps"] > 0
        latency = point["latency_ms"]
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert _token(first) not in out_json.read_text()
    with Image.open(out_png) as image:
        assert image.format == "PNG"
        assert image.size[0] > 600 and image.size[1] > 300
        # Not a blank canvas: the lines and labels give it many colours.
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 16) or []) > 20


def test_open_loop_counts_scheduled_requests(first: ServerProcess, tmp_path: Path) -> None:
    out_json = tmp_path / "open.json"
    result = bench(
        f"{first.inference_url}/ping", "--rate", "100", "--arrivals", "uniform",
        "--connections", "4", *SHORT, "--json", str(out_json),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "latency from each request's scheduled time" in result.stdout
    (point,) = _load(out_json)["points"]  # type: ignore[misc]
    # 100/s for 0.4 s: due at 0.01 s steps inside the window.
    assert 38 <= point["requests"] <= 41
    assert point["ok"] + point["errors"]["total"] == point["requests"]
    assert point["ok"] > 0
    assert point["dispatch_lag_ms"]["max"] is not None


def test_compare_alternates_two_real_servers(
    first: ServerProcess, second: ServerProcess, tmp_path: Path
) -> None:
    out_json = tmp_path / "compare.json"
    result = bench(
        f"{first.inference_url}/predictions/echo",
        "--compare", f"{second.inference_url}/predictions/echo",
        "--token", _token(first), "--compare-token", _token(second),
        "--body", "abc", "--concurrency", "1,2", "--repeats", "2", *SHORT,
        "--label", "first", "--compare-label", "second",
        "--json", str(out_json),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    order = [line.split(":")[0] for line in result.stdout.splitlines() if " #" in line]
    assert order == [
        "A c=1 #1", "B c=1 #1", "A c=1 #2", "B c=1 #2",
        "A c=2 #1", "B c=2 #1", "A c=2 #2", "B c=2 #2",
    ]  # fmt: skip
    assert "req/s A/B" in result.stdout
    assert "A first " in result.stdout and "B second " in result.stdout  # the summary table
    doc = _load(out_json)
    assert [t["name"] for t in doc["targets"]] == ["first", "second"]  # type: ignore[attr-defined]
    assert [t["url"] for t in doc["targets"]] == [  # type: ignore[attr-defined]
        f"{first.inference_url}/predictions/echo",
        f"{second.inference_url}/predictions/echo",
    ]
    assert all(p["errors"]["total"] == 0 and p["ok"] > 0 for p in doc["points"])  # type: ignore[attr-defined]
    ratios = doc["ratios"]
    assert [r["load"] for r in ratios] == [1, 2]  # type: ignore[attr-defined]
    assert all(r["throughput"] > 0 for r in ratios)  # type: ignore[attr-defined]


def test_a_4xx_answering_target_is_counted_as_errors(first: ServerProcess, tmp_path: Path) -> None:
    out_json = tmp_path / "denied.json"
    # No token on a server with token authorization: every answer is 401.
    result = bench(
        f"{first.inference_url}/predictions/echo", "--body", "x", "--concurrency", "2",
        *SHORT, "--json", str(out_json),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (point,) = _load(out_json)["points"]  # type: ignore[misc]
    assert point["ok"] == 0 and point["throughput_rps"] == 0
    assert point["latency_ms"]["p50"] is None
    assert set(point["errors"]["status"]) == {"401"}
    assert point["errors"]["total"] == point["errors"]["status"]["401"] > 0
    assert "401:" in result.stdout
    # A missing model: 404s, with the right token.
    result = bench(
        f"{first.inference_url}/predictions/nope", "--token", _token(first), "--body", "x",
        "--concurrency", "1", *SHORT,
    )  # fmt: skip
    assert result.returncode == 0
    assert "errors 404:" in result.stdout


def test_refused_and_unreachable_targets() -> None:
    refused = bench("http://192.0.2.1:8080/ping", *SHORT)
    assert refused.returncode == 3
    assert "refusing to load http://192.0.2.1:8080/ping" in refused.stderr
    assert "--allow-remote" in refused.stderr
    assert refused.stdout == ""
    # A loopback port nothing listens on: the reachability check stops the run.
    closed = bench(f"http://127.0.0.1:{free_port()}/ping", *SHORT)
    assert closed.returncode == 4
    assert "cannot connect to" in closed.stderr
    usage = bench("http://127.0.0.1:1/ping", "--rate", "-5")
    assert usage.returncode == 2
    assert "--rate: -5 is out of range" in usage.stderr


def test_the_time_limit_bounds_the_run(first: ServerProcess, tmp_path: Path) -> None:
    out_json = tmp_path / "cut.json"
    # Each answer takes 0.8 s; the window cannot open before the first answer, so a 0.6 s
    # limit cuts the run: exit 5, partial results still written.
    result = bench(
        f"{first.inference_url}/predictions/slow", "--token", _token(first), "--body", "x",
        "--concurrency", "1,2", "--warmup", "0", "--duration", "0.3", "--time-limit", "0.6",
        "--timeout", "5", "--progress", "never", "--json", str(out_json),
    )  # fmt: skip
    assert result.returncode == 5, result.stdout + result.stderr
    assert "--time-limit 0.6 s reached" in result.stderr
    doc = _load(out_json)
    assert doc["complete"] is False
    points = doc["points"]
    assert isinstance(points, list) and len(points) == 1 and points[0]["truncated"] is True


def test_progress_line_on_stderr(first: ServerProcess) -> None:
    argv = [f"{first.inference_url}/ping", "--concurrency", "1", "--warmup", "0.1"]
    result = subprocess.run(
        [TORCHWICK, "bench", *argv, "--duration", "0.5", "--progress", "always"],
        capture_output=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )  # bytes: text mode would turn the carriage returns into newlines
    assert result.returncode == 0
    assert b"\r[" in result.stderr and b"point 1/1" in result.stderr
    assert b"\r" not in result.stdout


def test_ctrl_c_reports_the_points_measured_so_far(first: ServerProcess, tmp_path: Path) -> None:
    out_json = tmp_path / "interrupted.json"
    argv = [f"{first.inference_url}/ping", "--concurrency", "1,2,3", "--warmup", "0.1"]
    argv += ["--duration", "5", "--progress", "never", "--json", str(out_json)]
    with subprocess.Popen(
        [TORCHWICK, "bench", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:  # the first point's line: it is done, the second runs
            if line.startswith("A c=1 #1:"):
                break
        process.send_signal(signal.SIGINT)
        process.wait(timeout=RUN_TIMEOUT_S)  # its output is short: the pipes cannot fill
        # Read through the same buffered files (communicate() would skip their buffers).
        rest = process.stdout.read()
        assert process.stderr is not None
        err = process.stderr.read()
    assert process.returncode == 130, rest + err
    assert "interrupted: reporting the points measured so far" in err
    assert "c=1" in rest and "c=3" not in rest  # the summary table has the finished point
    doc = _load(out_json)
    assert doc["complete"] is False
    assert [p["load"] for p in doc["points"]] == [1]  # type: ignore[attr-defined]
