"""``torchwick bench --compare`` of real TorchServe 0.12 and torchwick serving one archive.

The archive (a function handler, built by torchwick's archiver) is served by both; the bench
runs as a subprocess with short bounded points. Needs the TorchServe venv built by
``benchmarks/torchserve_env.sh`` (``$TORCHSERVE_VENV``, default ``/work/tsvenv``) and Java;
skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest

from tests.support.server import ServerOptions, build_archive, free_port, running_server
from torchwick.bench.results import schema

pytestmark = [pytest.mark.torchserve, pytest.mark.slow, pytest.mark.timeout(300)]

VENV = Path(os.environ.get("TORCHSERVE_VENV", "/work/tsvenv"))
TORCHSERVE = VENV / "bin" / "torchserve"
if not TORCHSERVE.exists():
    pytest.skip(f"TorchServe 0.12 venv not found at {VENV}", allow_module_level=True)
if shutil.which("java") is None:
    pytest.skip("java is not installed; TorchServe's frontend needs it", allow_module_level=True)

HANDLER = """
def handle(data, context):
    if data is None:
        return None
    return [{"ok": True} for _ in data]
"""


def _ping(url: str) -> int:
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=5) as response:
            return int(response.status)
    except OSError:
        return 0


@pytest.fixture
def torchserve(tmp_path: Path) -> Iterator[str]:
    """Real TorchServe on free ports serving ``ok.mar``; yields its inference URL."""
    root = tmp_path / "ts"
    tmp = root / "tmp"
    tmp.mkdir(parents=True)
    build_archive(root / "store", "ok", HANDLER)
    inference = f"http://127.0.0.1:{free_port()}"
    (root / "config.properties").write_text(
        f"inference_address={inference}\n"
        f"management_address=http://127.0.0.1:{free_port()}\n"
        f"metrics_address=http://127.0.0.1:{free_port()}\n"
        f"grpc_inference_port={free_port()}\n"
        f"grpc_management_port={free_port()}\n"
        f"vmargs=-Xmx512m -Djava.io.tmpdir={tmp}\n"
        "disable_system_metrics=true\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1"}
    env["PATH"] = f"{VENV / 'bin'}:{env['PATH']}"
    command = [str(TORCHSERVE), "--start", "--ncs", "--model-store", str(root / "store")]
    command += ["--ts-config", str(root / "config.properties"), "--disable-token-auth"]
    command += ["--models", "ok=ok.mar"]
    pid_file = tmp / ".model_server.pid"
    try:
        # Output to a file: the JVM inherits it, so a pipe would never reach its end.
        with (root / "launcher.out").open("wb") as out:
            subprocess.run(
                command, cwd=root, env=env, check=True, timeout=60, stdout=out, stderr=out
            )
        deadline = time.monotonic() + 120
        while _ping(inference) != 200:
            assert time.monotonic() < deadline, f"TorchServe not healthy; see {root / 'logs'}"
            time.sleep(0.3)
        yield inference
    finally:
        pid = int(pid_file.read_text()) if pid_file.exists() else None
        stop = [str(TORCHSERVE), "--stop"]
        subprocess.run(stop, cwd=root, env=env, timeout=60, capture_output=True, check=False)
        deadline = time.monotonic() + 30  # --stop returns before the JVM has exited
        while pid is not None and time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            if pid is not None:
                os.kill(pid, signal.SIGKILL)


def test_bench_compares_torchserve_and_torchwick(torchserve: str, tmp_path: Path) -> None:
    build_archive(tmp_path / "tw" / "model_store", "ok", HANDLER)
    options = ServerOptions(disable_token_auth=True, load_models="ok.mar")
    out_json = tmp_path / "compare.json"
    with running_server(tmp_path / "tw", options) as server:
        # TorchServe's model needs its worker up: wait for a 200 prediction first.
        deadline = time.monotonic() + 60
        while True:
            request = urllib.request.Request(f"{torchserve}/predictions/ok", data=b"x")
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "TorchServe's model never answered"
            time.sleep(0.3)
        result = subprocess.run(
            [
                str(Path(sys.executable).parent / "torchwick"), "bench",
                f"{torchserve}/predictions/ok", "--label", "TorchServe",
                "--compare", f"{server.inference_url}/predictions/ok",
                "--compare-label", "torchwick", "--body", "x", "--concurrency", "1,2",
                "--warmup", "0.2", "--duration", "0.5", "--progress", "never",
                "--json", str(out_json),
            ],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(out_json.read_text())
    jsonschema.validate(doc, schema())
    assert [t["name"] for t in doc["targets"]] == ["TorchServe", "torchwick"]
    assert len(doc["points"]) == 4
    for point in doc["points"]:
        assert point["ok"] > 0 and point["errors"]["total"] == 0, point
    assert len(doc["ratios"]) == 2
