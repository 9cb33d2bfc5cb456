"""Background start and stop of the server (``torchserve --start`` / ``--stop``).

``start_daemon`` spawns ``python -m torchwick.server --foreground ...`` in a new session, then
waits until ``GET /ping`` on the inference address answers 200 (prints ``Model server
started.``, returns 0), the child exits (returns 1) or the wait times out (returns 1; the child
keeps running and can be stopped). With ``console=True`` (what ``torchserve --start`` does,
like TorchServe's launcher) the server inherits the launcher's stdout and stderr, so its log
lines and its workers' (``MODEL_LOG``-style, tracebacks included) keep arriving wherever the
launcher's output goes: a terminal, a pipe a tool reads, or a file the caller redirected it
to. Otherwise its output is appended to ``<log_location>/torchwick_stdout.log`` and a failed
start prints that file's tail.

The server process itself owns the PID file ``$TMPDIR/.torchwick_server.pid`` (see
``claim_pid_file``): JSON with its pid and key-file path, created with mode 0600, never
TorchServe's ``.model_server.pid``, so both servers can run side by side. ``stop_daemon`` sends
SIGTERM, waits, escalates to SIGKILL, and removes the PID and key files.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, TextIO

from .config.addresses import ListenAddress, parse_address
from .config.errors import ConfigError
from .security.files import PRIVATE_MODE
from .security.tls import load_tls_material
from .security.tokens import read_key_file
from .settings import Settings

PID_FILE_NAME = ".torchwick_server.pid"
STDOUT_LOG_NAME = "torchwick_stdout.log"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0
_POLL_S = 0.2
_TAIL_LINES = 40


class AlreadyRunningError(RuntimeError):
    """Another torchwick server holds the PID file; ``pid`` is its process id."""

    def __init__(self, pid: int) -> None:
        super().__init__(
            f"torchwick is already running (pid {pid}); stop it first with torchserve --stop"
        )
        self.pid = pid


@dataclass(frozen=True, slots=True)
class PidRecord:
    """What the PID file says about the running server."""

    pid: int
    key_file: str
    started_at: float


def pid_file_path(environ: Mapping[str, str]) -> Path:
    """``$TMPDIR/.torchwick_server.pid`` (the platform temp dir when TMPDIR is unset)."""
    return Path(environ.get("TMPDIR") or tempfile.gettempdir()) / PID_FILE_NAME


def read_pid_record(path: Path) -> PidRecord | None:
    """The record in ``path``, or None when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return PidRecord(int(data["pid"]), str(data["key_file"]), float(data["started_at"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def process_alive(pid: int) -> bool:
    """True when ``pid`` is a live process (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _is_torchwick_process(pid: int) -> bool:
    """False only when /proc shows ``pid`` is some other program (the pid was reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return b"torchwick" in cmdline or b"torchserve" in cmdline


def running_server(path: Path) -> PidRecord | None:
    """The record of a live torchwick server, or None. A stale PID file is removed."""
    record = read_pid_record(path)
    if record is None:
        return None
    if process_alive(record.pid) and _is_torchwick_process(record.pid):
        return record
    with contextlib.suppress(FileNotFoundError):
        if read_pid_record(path) == record:
            path.unlink()
    return None


def claim_pid_file(path: Path, record: PidRecord) -> None:
    """Create the PID file for ``record`` (mode 0600), atomically and exclusively.

    A stale file is replaced. Raises ``AlreadyRunningError`` when a live server holds it, and
    ``OSError`` when the directory is not writable.
    """
    data = json.dumps(asdict(record)).encode("utf-8")
    temporary = path.with_name(f"{path.name}.{record.pid}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_MODE)
    with os.fdopen(descriptor, "wb") as stream:
        stream.write(data)
    try:
        for _ in range(2):
            try:
                os.link(temporary, path)
                return
            except FileExistsError:
                holder = running_server(path)
                if holder is not None:
                    raise AlreadyRunningError(holder.pid) from None
        raise AlreadyRunningError(-1)
    finally:
        temporary.unlink(missing_ok=True)


def release_pid_file(path: Path, pid: int) -> None:
    """Remove the PID file if it still names ``pid``."""
    record = read_pid_record(path)
    if record is not None and record.pid == pid:
        path.unlink(missing_ok=True)


def start_daemon(
    settings: Settings,
    forward_args: Sequence[str],
    environ: Mapping[str, str],
    cwd: Path,
    *,
    out: TextIO,
    err: TextIO,
    command: Sequence[str] | None = None,
    timeout_s: float | None = None,
    console: bool = False,
) -> int:
    """Start the server in the background and wait until it is healthy; return the exit code.

    ``forward_args`` are the CLI flags for the child; ``command`` replaces the whole child
    command line (tests use it). The wait lasts ``timeout_s``, by default the longer of
    ``START_TIMEOUT_S`` and ``default_startup_timeout`` (startup models load before ``/ping``
    answers 200). ``console`` makes the child inherit this process's stdout/stderr instead
    of writing ``torchwick_stdout.log``. Never raises for a failed start: it reports and
    returns 1.
    """
    if timeout_s is None:
        timeout_s = max(START_TIMEOUT_S, float(settings.default_startup_timeout))
    pid_path = pid_file_path(environ)
    holder = running_server(pid_path)
    if holder is not None:
        print(AlreadyRunningError(holder.pid), file=err)
        return 1
    address = parse_address(settings.inference_address, key="inference_address")
    if address.port == 0:
        print("inference_address: --start needs a fixed port (0 means any port)", file=err)
        return 1
    if _something_listens(address):
        print(f"inference_address {address} is already in use by another program.", file=err)
        return 1
    settings.log_location.mkdir(parents=True, exist_ok=True)
    log_path = settings.log_location / STDOUT_LOG_NAME
    argv = list(command or [sys.executable, "-m", "torchwick.server", "--foreground"])
    if command is None:
        argv.extend(forward_args)
    with contextlib.ExitStack() as stack:
        output: int | IO[bytes] | None = None  # None: inherit the launcher's stdout/stderr
        if not console:
            log = stack.enter_context(log_path.open("ab"))
            log.write(f"\n--- starting torchwick at {time.ctime()} ---\n".encode())
            log.flush()
            output = log
        child = subprocess.Popen(
            argv,
            cwd=cwd,
            env=dict(environ),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT if output is not None else None,
            start_new_session=True,
            close_fds=True,
        )
    deadline = time.monotonic() + timeout_s
    last_status: int | None = None
    ca_pem = _server_certificate(settings) if address.is_tls else None
    while time.monotonic() < deadline:
        code = child.poll()
        if code is not None:
            print(f"torchwick failed to start (exit status {code}).", file=err)
            if not console:
                print(f"Last lines of {log_path}:\n{_tail(log_path)}", file=err)
            return 1
        last_status = ping(address, _inference_key(settings.key_file), ca_pem)
        record = read_pid_record(pid_path)
        if last_status == 200 and record is not None and record.pid == child.pid:
            print("Model server started.", file=out, flush=True)
            return 0
        time.sleep(_POLL_S)
    answer = "no answer" if last_status is None else f"status {last_status}"
    where = "its output" if console else str(log_path)
    print(
        f"torchwick did not become healthy within {timeout_s:.0f} s (last /ping: {answer}). "
        f"It is still running as pid {child.pid}; see {where}, or stop it with "
        "torchserve --stop.",
        file=err,
    )
    return 1


def stop_daemon(
    environ: Mapping[str, str], *, out: TextIO, err: TextIO, timeout_s: float = STOP_TIMEOUT_S
) -> int:
    """Stop the server named by the PID file: SIGTERM, wait, then SIGKILL; return exit code.

    Removes the PID file and the server's key file. A missing server is not an error.
    """
    pid_path = pid_file_path(environ)
    record = read_pid_record(pid_path)
    if record is None:
        print("torchwick is not running.", file=out)
        return 0
    if process_alive(record.pid) and _is_torchwick_process(record.pid):
        try:
            os.kill(record.pid, signal.SIGTERM)
            if not _wait_for_exit(record.pid, timeout_s):
                print(f"pid {record.pid} did not stop in {timeout_s:.0f} s; killing it", file=err)
                os.kill(record.pid, signal.SIGKILL)
                if not _wait_for_exit(record.pid, 10.0):
                    print(f"pid {record.pid} survived SIGKILL", file=err)
                    return 1
        except ProcessLookupError:
            pass
        except PermissionError:
            print(f"not permitted to signal pid {record.pid}", file=err)
            return 1
        message = "torchwick has stopped."
    else:
        message = "torchwick had already stopped."
    release_pid_file(pid_path, record.pid)
    Path(record.key_file).unlink(missing_ok=True)
    print(message, file=out)
    return 0


def ping(address: ListenAddress, token: str | None, ca_pem: bytes | None) -> int | None:
    """``GET /ping`` on ``address``; the HTTP status, or None when nothing answers.

    Over https the server's own certificate (``ca_pem``) is the trust anchor."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    connection: http.client.HTTPConnection
    if address.uds_path is not None:
        connection = _UnixHTTPConnection(address.uds_path)
    elif address.is_tls:
        context = ssl.create_default_context(cadata=ca_pem.decode("ascii") if ca_pem else None)
        context.check_hostname = False
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        connection = http.client.HTTPSConnection(
            address.connect_host(), address.port, timeout=2.0, context=context
        )
    else:
        connection = http.client.HTTPConnection(address.connect_host(), address.port, timeout=2.0)
    try:
        connection.request("GET", "/ping", headers=headers)
        return connection.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


class _UnixHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection over a unix-domain socket."""

    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=2.0)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self._path))
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _something_listens(address: ListenAddress) -> bool:
    """True when a connection to ``address`` succeeds before the server is started."""
    try:
        if address.uds_path is not None:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(1.0)
                probe.connect(str(address.uds_path))
        else:
            with socket.create_connection((address.connect_host(), address.port or 0), 1.0):
                pass
    except OSError:
        return False
    return True


def _server_certificate(settings: Settings) -> bytes | None:
    try:
        material = load_tls_material(settings)
    except ConfigError:
        return None
    return material.cert_pem if material is not None else None


def _inference_key(key_file: Path) -> str | None:
    try:
        return read_key_file(key_file).inference.key
    except (OSError, ValueError):
        return None


def _wait_for_exit(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while process_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)
    return True


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as error:
        return f"(cannot read the log: {error})"
    return "\n".join(lines[-_TAIL_LINES:])
