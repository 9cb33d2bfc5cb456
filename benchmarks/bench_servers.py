"""Start, probe and stop the servers under test: torchwick and real TorchServe 0.12.

A third kind, ``torchwick-base``, is torchwick run by another interpreter (another commit's venv,
``--baseline-python``): it is started, classified and stopped exactly like torchwick.

Both get the same kind of ``config.properties`` (TorchServe's keys, free ports on 127.0.0.1 only,
token auth off, per-model settings in the ``models=`` JSON) and the same models, loaded at start
with ``--models``. Each runs in its own session (so its process group can be signalled as one),
in its own working directory, with ``TMPDIR``/``TEMP`` pointing inside it (TorchServe keeps its
pid file and unpacked archives there; a TorchServe run by anyone else on the machine is never
touched). ``stop()`` is idempotent, SIGTERMs the group, then SIGKILLs whatever is left.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench_procs import ProcInfo, cmdline, read_proc, rss_bytes, tree

HOST = "127.0.0.1"
TORCHWICK = "torchwick"
TORCHSERVE = "torchserve"
#: torchwick from another checkout (``--baseline-python``), to compare two commits in one run.
TORCHWICK_BASE = "torchwick-base"
LABELS = {TORCHWICK: "torchwick", TORCHSERVE: "TorchServe", TORCHWICK_BASE: "torchwick-base"}
#: Column prefixes in the result tables.
SHORT = {TORCHWICK: "tw", TORCHSERVE: "TS", TORCHWICK_BASE: "base"}


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports the kernel reports free on 127.0.0.1 now."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass(frozen=True)
class ModelServing:
    """How one model is served: its registered name, archive and per-model settings."""

    name: str
    mar: str
    batch_size: int
    max_batch_delay_ms: int
    workers: int

    def models_json_entry(self) -> dict[str, object]:
        return {
            "1.0": {
                "defaultVersion": True,
                "marName": self.mar,
                "minWorkers": self.workers,
                "maxWorkers": self.workers,
                "batchSize": self.batch_size,
                "maxBatchDelay": self.max_batch_delay_ms,
                "responseTimeout": 120,
            }
        }


def build_archive(
    archiver: Sequence[str],
    *,
    name: str,
    serialized_file: Path,
    handler: Path,
    extra_files: Sequence[Path],
    export_path: Path,
    config_file: Path | None = None,
) -> Path:
    """Run a ``torch-model-archiver`` compatible CLI; return the ``.mar`` it wrote.

    It runs in ``export_path``: ``python -m`` puts the working directory first on ``sys.path``,
    so run from a checkout it would import that checkout's package, not the interpreter's own.
    ``config_file`` is the archive's ``model-config.yaml`` (``--config-file``), if any.
    """
    export_path.mkdir(parents=True, exist_ok=True)
    command = [
        *archiver,
        "--model-name",
        name,
        "--version",
        "1.0",
        "--serialized-file",
        str(serialized_file),
        "--handler",
        str(handler),
        "--export-path",
        str(export_path),
        "--force",
    ]
    if extra_files:
        command += ["--extra-files", ",".join(str(f) for f in extra_files)]
    if config_file is not None:
        command += ["--config-file", str(config_file)]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=300, check=False, cwd=export_path
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed ({completed.returncode}):\n"
            f"{completed.stdout[-2000:]}{completed.stderr[-2000:]}"
        )
    mar = export_path / f"{name}.mar"
    if not mar.is_file():
        raise RuntimeError(f"{' '.join(command)} wrote no {mar}")
    return mar


def http_request(
    port: int,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    content_type: str | None = None,
    timeout_s: float = 5.0,
) -> tuple[int, bytes]:
    """One blocking request on a fresh connection (probes only; loads use bench_client)."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout_s)
    try:
        headers = {"Content-Type": content_type} if content_type else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@dataclass
class StartTiming:
    """Seconds from process start to the first ``/ping`` 200 and to the first 2xx prediction."""

    ping_s: float
    model_s: float | None = None


@dataclass
class Server:
    """One server process tree serving ``models`` from ``model_store``."""

    kind: str
    command_prefix: list[str]
    workdir: Path
    model_store: Path
    models: list[ModelServing]
    extra_env: dict[str, str] = field(default_factory=dict)
    #: Extra ``config.properties`` lines (``key=value``), after the benchmark's own.
    extra_properties: list[str] = field(default_factory=list)
    job_queue_size: int = 1000
    process: subprocess.Popen[bytes] | None = None
    inference_port: int = 0
    management_port: int = 0
    #: gRPC ports (free ones, so servers side by side never meet on 7070/7071).
    grpc_inference_port: int = 0
    grpc_management_port: int = 0
    _roles: dict[int, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return LABELS[self.kind]

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    def _write_config(self) -> Path:
        inference, management, metrics, grpc_inference, grpc_management = free_ports(5)
        self.inference_port, self.management_port = inference, management
        self.grpc_inference_port, self.grpc_management_port = grpc_inference, grpc_management
        models_json = {m.name: m.models_json_entry() for m in self.models}
        lines = [
            f"inference_address=http://{HOST}:{inference}",
            f"management_address=http://{HOST}:{management}",
            f"metrics_address=http://{HOST}:{metrics}",
            f"grpc_inference_port={grpc_inference}",
            f"grpc_management_port={grpc_management}",
            "default_workers_per_model=1",
            f"job_queue_size={self.job_queue_size}",
            "disable_token_authorization=true",
            f"models={json.dumps(models_json, separators=(',', ':'))}",
            *self.extra_properties,
        ]
        path = self.workdir / "config.properties"
        path.write_text("\n".join(lines) + "\n")
        return path

    def command(self, config: Path) -> list[str]:
        models = [f"{m.name}={m.mar}" for m in self.models]
        common = ["--ts-config", str(config), "--model-store", str(self.model_store)]
        # No config snapshots for either: every start is from this config alone.
        command = [*self.command_prefix, "--foreground", "--ncs", *common, "--disable-token-auth"]
        if self.kind == TORCHSERVE:
            command.insert(1, "--start")
        if models:
            command += ["--models", *models]
        return command

    def start(self, start_timeout_s: float, probe: tuple[str, bytes, str] | None) -> StartTiming:
        """Start, wait for ``/ping`` 200, then (with ``probe``) for a 2xx prediction.

        ``probe`` is ``(path, body, content_type)``. Raises ``RuntimeError`` (with the log's tail)
        when the server exits, or is not ready within ``start_timeout_s`` for each of the two.
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        private_tmp = self.workdir / "tmp"
        private_tmp.mkdir(exist_ok=True)
        config = self._write_config()
        env = dict(os.environ)
        venv_bin = str(Path(self.command_prefix[0]).parent)
        env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
        env.pop("VIRTUAL_ENV", None)
        env.pop("PYTHONPATH", None)
        env.update({"TMPDIR": str(private_tmp), "TEMP": str(private_tmp), "PYTHONUNBUFFERED": "1"})
        env.update(self.extra_env)
        with self.log_path.open("ab") as log:
            started = time.perf_counter()
            self.process = subprocess.Popen(
                self.command(config),
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = started + start_timeout_s
        self._wait_for(lambda: self._status("GET", "/ping") == 200, deadline, "/ping 200")
        timing = StartTiming(ping_s=time.perf_counter() - started)
        if probe is not None:
            path, body, content_type = probe
            deadline = time.perf_counter() + start_timeout_s
            self._wait_for(
                lambda: 200 <= self._status("POST", path, body, content_type) < 300,
                deadline,
                f"a 2xx from POST {path}",
            )
            timing.model_s = time.perf_counter() - started
        return timing

    def _status(
        self, method: str, path: str, body: bytes | None = None, content_type: str | None = None
    ) -> int:
        try:
            return http_request(
                self.inference_port, method, path, body=body, content_type=content_type
            )[0]
        except (OSError, http.client.HTTPException):
            return 0

    def _wait_for(self, ready: Callable[[], bool], deadline: float, what: str) -> None:
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.label} exited ({self.process.returncode}) before {what}; "
                    f"log tail:\n{self.log_tail()}"
                )
            if ready():
                return
            if time.perf_counter() > deadline:
                raise RuntimeError(
                    f"{self.label}: no {what} within the start timeout; log tail:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.02)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    @property
    def root_pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def classify(self, pid: int, info: ProcInfo) -> str:
        """The role of one process of this server's tree (cached per pid)."""
        role = self._roles.get(pid)
        if role is None:
            command = cmdline(pid)
            if self.kind == TORCHSERVE:
                if info.comm == "java":
                    role = "frontend"
                elif "model_service_worker" in command:
                    role = "worker"
                else:
                    role = "other"  # the python launcher, the metrics collector
            elif pid == self.root_pid:
                role = "frontend"
            elif "resource_tracker" in command or "semaphore_tracker" in command:
                role = "other"
            else:
                role = "worker"
            self._roles[pid] = role
        return role

    def frontend_pid(self) -> int | None:
        for pid, info in tree(self.root_pid).items():
            if self.classify(pid, info) == "frontend":
                return pid
        return None

    def frontend_rss(self) -> int | None:
        pid = self.frontend_pid()
        return None if pid is None else rss_bytes(pid)

    def worker_count(self) -> int:
        return sum(
            1 for pid, info in tree(self.root_pid).items() if self.classify(pid, info) == "worker"
        )

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM the process group, wait for every process of the tree, SIGKILL what is left."""
        process = self.process
        if process is None:
            return
        # Workers may run in sessions of their own (torchwick's do): note every pid first.
        pids = set(tree(process.pid)) | {process.pid}
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            process.poll()
            if not _alive(pids):
                break
            time.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            for pid in _alive(pids):  # any that left the group
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        self.process = None  # only now: an interrupted stop() is simply run again


def _alive(pids: set[int]) -> set[int]:
    """Those of ``pids`` still running (zombies are finished)."""
    alive: set[int] = set()
    for pid in pids:
        info = read_proc(pid)
        if info is not None and info.state != "Z":
            alive.add(pid)
    return alive


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
