"""Start a real torchwick server process for a test, and build real archives for it.

``start_server`` writes a ``config.properties`` (listeners, gRPC ones included, on port 0,
so the OS picks free ports with no race; the server prints the ports it bound), a model store
and a working directory under ``root``, runs ``python -m torchwick.server --foreground``
there, and waits until ``/ping`` answers 200. The defaults are the product's secure defaults: token
authorization on and the model API off; tests opt out per server.

``ServerProcess`` exposes the base URLs, the keys from ``key_file.json`` and ``httpx`` clients
with the right bearer token already set. ``stop`` sends SIGTERM and waits; the server's output
is kept in ``root/server.out`` and ``logs()`` returns it (the conftest prints it for failed
tests).

``build_archive`` writes a handler file and calls ``torchwick.archiver.archive_model``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import yaml

from torchwick.archiver import archive_model

ApiKind = Literal["inference", "management", "metrics"]

#: How long a server may take to answer /ping after start (startup models included).
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
_BOUND = re.compile(r"(?<!gRPC )(Inference|Management|Metrics) API bound to (\S+)")
#: ``gRPC Inference API bound to grpc://127.0.0.1:7070`` (``grpcs://`` with TLS).
_GRPC_BOUND = re.compile(r"gRPC (Inference|Management) API bound to (\S+)")


def free_port() -> int:
    """A TCP port that was free a moment ago (for tests that need two equal addresses)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerOptions:
    """What differs from the secure defaults for one server."""

    enable_model_api: bool = False
    disable_token_auth: bool = False
    #: ``load_models`` value, e.g. ``"echo=echo.mar"`` or ``"all"``.
    load_models: str | None = None
    #: Extra config.properties keys (values written as given).
    config: Mapping[str, str] = field(default_factory=dict)
    #: Extra environment variables for the server process.
    env: Mapping[str, str] = field(default_factory=dict)
    start_timeout_s: float = START_TIMEOUT_S
    #: ``foreground``: ``python -m torchwick.server --foreground``; ``start``: the way a
    #: TorchServe user does it, ``torchserve --start`` from a shell (the daemon inherits the
    #: launcher's output, which goes to ``server.out``), stopped with ``torchserve --stop``.
    launcher: Literal["foreground", "start"] = "foreground"
    #: False: the server is ready once ``/ping`` answers at all (a startup model may fail).
    expect_healthy: bool = True
    #: ``RLIMIT_NOFILE`` (soft and hard) of the server process; ``None`` keeps the test's.
    nofile: int | None = None


class ServerProcess:
    """A running server: URLs, keys, clients, logs and ``stop``."""

    def __init__(self, root: Path, process: subprocess.Popen[bytes], options: ServerOptions):
        self.root = root
        self.model_store = root / "model_store"
        self.workdir = root / "server"
        self.output = root / "server.out"
        self.process = process
        self.options = options
        self.urls: dict[str, str] = {}
        #: ``inference``/``management`` -> the gRPC address printed (``grpc://host:port``).
        self.grpc_urls: dict[str, str] = {}
        self.tmpdir: Path | None = None
        self.env: dict[str, str] = {}
        self._clients: list[httpx.Client] = []

    # -- addresses and keys -------------------------------------------------------------------

    @property
    def inference_url(self) -> str:
        """Base URL of the inference API."""
        return self.urls["inference"]

    @property
    def management_url(self) -> str:
        """Base URL of the management API."""
        return self.urls["management"]

    @property
    def metrics_url(self) -> str:
        """Base URL of the metrics API."""
        return self.urls["metrics"]

    def grpc_target(self, api: Literal["inference", "management"] = "inference") -> str:
        """``host:port`` of ``api``'s gRPC server, for ``grpc.insecure_channel`` and friends."""
        return self.grpc_urls[api].split("://", 1)[1]

    @property
    def key_file(self) -> Path:
        """``key_file.json`` in the server's working directory."""
        return self.workdir / "key_file.json"

    def keys(self) -> dict[str, str]:
        """The current keys (``inference``, ``management``, ``api``); empty when auth is off."""
        if self.options.disable_token_auth or not self.key_file.exists():
            return {}
        document = json.loads(self.key_file.read_text())
        return {
            "inference": document["inference"]["key"],
            "management": document["management"]["key"],
            "api": document["API"]["key"],
        }

    def auth(self, kind: Literal["inference", "management", "api"]) -> dict[str, str]:
        """An ``Authorization`` header for ``kind`` (empty when token auth is off)."""
        key = self.keys().get(kind)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def client(self, api: ApiKind = "inference", *, timeout: float = 30.0) -> httpx.Client:
        """An httpx client on ``api``'s base URL with that API's token set (closed at stop)."""
        headers = {} if api == "metrics" else self.auth(api)
        client = httpx.Client(base_url=self.urls[api], headers=headers, timeout=timeout)
        self._clients.append(client)
        return client

    def async_client(self, api: ApiKind = "inference", **kwargs: Any) -> httpx.AsyncClient:
        """An ``httpx.AsyncClient`` like ``client`` (the caller closes it)."""
        headers = {} if api == "metrics" else self.auth(api)
        kwargs.setdefault("timeout", 30.0)
        return httpx.AsyncClient(base_url=self.urls[api], headers=headers, **kwargs)

    # -- lifecycle -------------------------------------------------------------------------

    def logs(self) -> str:
        """The server's stdout/stderr so far, plus its log files."""
        parts = [self.output.read_text(errors="replace") if self.output.exists() else ""]
        for name in ("torchwick_log.log", "model_log.log"):
            path = self.workdir / "logs" / name
            if path.exists():
                parts.append(f"----- {name} -----\n{path.read_text(errors='replace')}")
        return "\n".join(parts)

    def alive(self) -> bool:
        """Whether the process is still running (with ``torchserve --start``: whether the
        launcher is running or exited 0, leaving the daemon)."""
        code = self.process.poll()
        if self.options.launcher == "start":
            return code is None or code == 0
        return code is None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, wait up to ``timeout`` (then SIGKILL); returns the exit code."""
        for client in self._clients:
            client.close()
        self._clients.clear()
        if self.options.launcher == "start":
            stopped = subprocess.run(
                [str(Path(sys.executable).parent / "torchserve"), "--stop"],
                cwd=self.workdir,
                env=self.env,
                timeout=timeout + 30,
                check=False,
                capture_output=True,
            )
            if self.tmpdir is not None:
                shutil.rmtree(self.tmpdir, ignore_errors=True)
            return stopped.returncode
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
        return self.process.returncode

    def wait_ready(self, timeout: float) -> None:
        """Wait for the bound addresses, then for ``/ping`` 200; raise with the logs if not."""
        deadline = time.monotonic() + timeout
        wanted = {"inference", "management"}
        if self.options.config.get("enable_metrics_api", "true") != "false":
            wanted.add("metrics")
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"server exited with {self.process.returncode}\n{self.logs()}")
            text = self.output.read_text(errors="replace") if self.output.exists() else ""
            for api, url in _BOUND.findall(text):
                self.urls[api.lower()] = url
            for api, url in _GRPC_BOUND.findall(text):
                self.grpc_urls[api.lower()] = url
            if wanted <= self.urls.keys():
                status = _ping(self.inference_url)
                if status == 200 or (status is not None and not self.options.expect_healthy):
                    return
            time.sleep(0.05)
        raise RuntimeError(f"server not ready after {timeout} s\n{self.logs()}")


def _ping(url: str) -> int | None:
    try:
        return httpx.get(f"{url}/ping", timeout=2.0).status_code
    except httpx.HTTPError:
        return None


def write_config(root: Path, options: ServerOptions) -> Path:
    """The server's config.properties (port 0 everywhere unless ``options.config`` says)."""
    values = {
        "inference_address": "http://127.0.0.1:0",
        "management_address": "http://127.0.0.1:0",
        "metrics_address": "http://127.0.0.1:0",
        # gRPC on free ports too: servers of parallel tests never collide on 7070/7071.
        "grpc_inference_port": "0",
        "grpc_management_port": "0",
        "model_store": str(root / "model_store"),
        "enable_model_api": str(options.enable_model_api).lower(),
        "disable_token_authorization": str(options.disable_token_auth).lower(),
        # A small machine: keep workers from each claiming every core.
        "default_workers_per_model": "1",
    }
    if options.load_models:
        values["load_models"] = options.load_models
    if options.launcher == "start":
        # The launcher checks the server's health on its configured address, so it needs
        # fixed ports (TorchServe's --start has the same need).
        for key in ("inference_address", "management_address", "metrics_address"):
            values[key] = f"http://127.0.0.1:{free_port()}"
        values["grpc_inference_port"] = str(free_port())
        values["grpc_management_port"] = str(free_port())
    values.update(options.config)
    path = root / "config.properties"
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    return path


def start_server(root: Path, options: ServerOptions | None = None) -> ServerProcess:
    """Start a server under ``root`` (``model_store/`` may already hold archives) and wait
    until it is ready; raises ``RuntimeError`` with its logs when it is not."""
    options = options or ServerOptions()
    (root / "model_store").mkdir(parents=True, exist_ok=True)
    workdir = root / "server"
    workdir.mkdir(parents=True, exist_ok=True)
    config = write_config(root, options)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TS_", "TORCHWICK_")) and key != "LOG_LOCATION"
    }
    # A private, short TMPDIR: the PID file lives there (one per server, so servers can run
    # side by side) and so do worker sockets (unix socket paths are limited to ~100 bytes).
    tmpdir = tempfile.mkdtemp(prefix="tw")
    env.update({"PYTHONUNBUFFERED": "1", "TMPDIR": tmpdir, **options.env})
    command = [sys.executable, "-m", "torchwick.server", "--foreground", "--ts-config", str(config)]
    if options.launcher == "start":
        torchserve = Path(sys.executable).parent / "torchserve"
        command = [str(torchserve), "--start", "--ncs", "--ts-config", str(config)]
    if options.nofile is not None:
        # util-linux's prlimit execs the server with the limit (soft and hard) already set.
        command = ["prlimit", f"--nofile={options.nofile}:{options.nofile}", *command]
    with open(root / "server.out", "wb") as out:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = ServerProcess(root, process, options)
    server.tmpdir = Path(tmpdir)
    server.env = env
    try:
        server.wait_ready(options.start_timeout_s)
    except BaseException:
        server.stop()
        raise
    return server


@contextlib.contextmanager
def running_server(root: Path, options: ServerOptions | None = None) -> Iterator[ServerProcess]:
    """``start_server`` as a context manager; stops the server and prints its logs if the
    body raised."""
    server = start_server(root, options)
    try:
        yield server
    except BaseException:
        print(f"===== torchwick server output =====\n{server.logs()}", file=sys.stderr)
        raise
    finally:
        server.stop()


def build_archive(
    store: Path,
    name: str,
    handler_source: str,
    *,
    version: str = "1.0",
    config: Mapping[str, Any] | None = None,
    extra_files: Mapping[str, bytes | str] | None = None,
    serialized_file: Path | None = None,
    model_file: Path | None = None,
    handler_name: str = "handler.py",
    archive_name: str | None = None,
) -> Path:
    """Write ``handler_source`` (dedented) and any extra files, archive them as
    ``store/<name>.mar`` (overwriting), and return the archive's path.

    ``config`` becomes the archive's model-config.yaml (``minWorkers``, ``batchSize``...).
    ``archive_name`` renames the result (e.g. ``echo-v2.mar`` for a second version).
    """
    store.mkdir(parents=True, exist_ok=True)
    source_dir = store.parent / "archive_sources" / f"{name}-{version}"
    source_dir.mkdir(parents=True, exist_ok=True)
    handler_path = source_dir / handler_name
    handler_path.write_text(textwrap.dedent(handler_source))
    extras: list[Path] = []
    for file_name, content in (extra_files or {}).items():
        path = source_dir / file_name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        extras.append(path)
    config_path = None
    if config is not None:
        config_path = source_dir / "model-config.yaml"
        config_path.write_text(yaml.safe_dump(dict(config)))
    # Built in a staging folder, so a second version never overwrites the first's file.
    staging = source_dir / "out"
    result = archive_model(
        model_name=name,
        version=version,
        handler=str(handler_path),
        serialized_file=serialized_file,
        model_file=model_file,
        extra_files=extras or None,
        config_file=config_path,
        export_path=staging,
        force=True,
    )
    target = store / (archive_name or result.path.name)
    result.path.replace(target)
    return target
