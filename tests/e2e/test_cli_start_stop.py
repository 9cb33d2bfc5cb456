"""``torchserve --start`` / ``--stop`` from a shell, on free ports.

Two groups:

* daemon mechanics against a tiny stand-in server (always run): health wait, failed start,
  already running, port in use, SIGKILL escalation;
* the real server (``torchwick.server.app``) started and stopped through the console script;
  skipped with the reason while that module does not exist.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from torchwick.server import daemon
from torchwick.server.settings import Settings

STUB = textwrap.dedent(
    """
    import http.server, os, signal, sys, threading, time
    from torchwick.server.daemon import PidRecord, claim_pid_file, pid_file_path
    from torchwick.server.daemon import release_pid_file

    port, key_file, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    if mode == "fail":
        print("stub: cannot load the model store", flush=True)
        sys.exit(3)
    path = pid_file_path(os.environ)
    claim_pid_file(path, PidRecord(os.getpid(), key_file, time.time()))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/ping" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(
            signal.SIGTERM, lambda *a: threading.Thread(target=server.shutdown).start()
        )
    server.serve_forever()
    release_pid_file(path, os.getpid())
    """
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class StubRun:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.port = free_port()
        self.environ = {**os.environ, "TMPDIR": str(tmp_path)}
        self.script = tmp_path / "torchwick_stub_server.py"
        self.script.write_text(STUB)
        self.settings = Settings(
            inference_address=f"http://127.0.0.1:{self.port}",
            key_file=tmp_path / "key_file.json",
            log_location=tmp_path / "logs",
        )
        self.out = io.StringIO()
        self.err = io.StringIO()

    def start(self, mode: str = "serve", timeout_s: float = 20.0) -> int:
        command = [
            sys.executable,
            str(self.script),
            str(self.port),
            str(self.tmp / "key_file.json"),
        ]
        return daemon.start_daemon(
            self.settings,
            [],
            self.environ,
            self.tmp,
            out=self.out,
            err=self.err,
            command=[*command, mode],
            timeout_s=timeout_s,
        )

    def stop(self, timeout_s: float = 20.0) -> int:
        return daemon.stop_daemon(self.environ, out=self.out, err=self.err, timeout_s=timeout_s)


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[StubRun]:
    run = StubRun(tmp_path)
    yield run
    run.stop(timeout_s=2.0)


def test_start_waits_for_health_and_stop_cleans_up(stub: StubRun) -> None:
    assert stub.start() == 0, stub.err.getvalue()
    assert stub.out.getvalue() == "Model server started.\n"
    pid_path = stub.tmp / daemon.PID_FILE_NAME
    record = daemon.read_pid_record(pid_path)
    assert record is not None and daemon.process_alive(record.pid)
    assert stat.S_IMODE(pid_path.stat().st_mode) == 0o600
    (stub.tmp / "key_file.json").write_text("{}")
    assert stub.start() == 1
    assert "already running" in stub.err.getvalue()
    assert stub.stop() == 0
    assert "torchwick has stopped." in stub.out.getvalue()
    assert not daemon.process_alive(record.pid)
    assert not pid_path.exists()
    assert not (stub.tmp / "key_file.json").exists()


def test_failed_start_shows_the_log_tail(stub: StubRun) -> None:
    assert stub.start("fail") == 1
    err = stub.err.getvalue()
    assert "exit status 3" in err
    assert "stub: cannot load the model store" in err
    assert (stub.tmp / "logs" / daemon.STDOUT_LOG_NAME).exists()


def test_port_in_use_is_reported_before_spawning(stub: StubRun) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", stub.port))
        squatter.listen()
        assert stub.start() == 1
    assert "already in use" in stub.err.getvalue()
    assert not (stub.tmp / daemon.PID_FILE_NAME).exists()


def test_stop_escalates_to_sigkill(stub: StubRun) -> None:
    assert stub.start("stubborn") == 0, stub.err.getvalue()
    assert stub.stop(timeout_s=1.0) == 0
    assert "killing it" in stub.err.getvalue()
    assert "stopped" in stub.out.getvalue()


# --- the real server ------------------------------------------------------------------------


def app_unavailable() -> str | None:
    """Why the real server cannot run here, or None when ``serve`` imports."""
    if importlib.util.find_spec("torchwick.server.app") is None:
        return "torchwick.server.app (the composition root with serve()) is not written yet"
    # app.serve imports these lazily; without them the server exits at once.
    needed = {
        "torchwick.server.app": "serve",
        "torchwick.server.dataplane": "DataPlane",
        "torchwick.server.workers": "WorkerSupervisor",
    }
    for module_name, attribute in needed.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            return f"{module_name} does not import yet: {error}"
        if not hasattr(module, attribute):
            return f"{module_name}.{attribute} is not written yet"
    return None


def torchserve_command() -> list[str]:
    script = Path(sys.executable).parent / "torchserve"
    if script.exists():
        return [str(script)]
    found = shutil.which("torchserve")
    if found and "torchwick" in Path(found).read_text(errors="replace"):
        return [found]
    return [sys.executable, "-m", "torchwick.server"]


def http_status(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.slow
def test_torchserve_start_and_stop_real_server(tmp_path: Path) -> None:
    reason = app_unavailable()
    if reason is not None:
        pytest.skip(reason)
    ports = {name: free_port() for name in ("inf", "mgmt", "metrics", "grpc_i", "grpc_m")}
    (tmp_path / "model_store").mkdir()
    (tmp_path / "ts.properties").write_text(
        f"inference_address=http://127.0.0.1:{ports['inf']}\n"
        f"management_address=http://127.0.0.1:{ports['mgmt']}\n"
        f"metrics_address=http://127.0.0.1:{ports['metrics']}\n"
        f"grpc_inference_port={ports['grpc_i']}\n"
        f"grpc_management_port={ports['grpc_m']}\n"
        "allowed_urls=file:///nowhere/.*\n"
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("TS_", "TORCHWICK_"))}
    environ["TMPDIR"] = str(tmp_path)

    def torchserve(*args: str) -> subprocess.CompletedProcess[str]:
        # Files, not pipes: the started server inherits the launcher's stdout/stderr (as
        # TorchServe's does), so a pipe would stay open until the server stops.
        out, err = tmp_path / "launcher.out", tmp_path / "launcher.err"
        with out.open("w") as stdout, err.open("w") as stderr:
            code = subprocess.run(
                [*torchserve_command(), *args],
                cwd=tmp_path,
                env=environ,
                stdout=stdout,
                stderr=stderr,
                timeout=120,
                check=False,
            ).returncode
        return subprocess.CompletedProcess(args, code, out.read_text(), err.read_text())

    started = torchserve(
        "--start", "--model-store", "model_store", "--ts-config", "ts.properties", "--ncs"
    )
    try:
        assert started.returncode == 0, started.stderr
        assert "Model server started." in started.stdout
        key_file = tmp_path / "key_file.json"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        keys = json.loads(key_file.read_text())
        base = f"http://127.0.0.1:{ports['mgmt']}"
        assert http_status(f"{base}/models") == 401
        assert http_status(f"{base}/models", keys["management"]["key"]) == 200
        again = torchserve(
            "--start", "--model-store", "model_store", "--ts-config", "ts.properties"
        )
        assert again.returncode == 1
        assert "already running" in again.stderr
    finally:
        stopped = torchserve("--stop")
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped" in stopped.stdout
    assert not (tmp_path / daemon.PID_FILE_NAME).exists()
    assert not (tmp_path / "key_file.json").exists()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and http_status_or_none(ports["inf"]) is not None:
        time.sleep(0.1)
    assert http_status_or_none(ports["inf"]) is None


def http_status_or_none(port: int) -> int | None:
    try:
        return http_status(f"http://127.0.0.1:{port}/ping")
    except OSError:
        return None
