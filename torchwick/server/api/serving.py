"""Opening listener sockets and running uvicorn servers on an existing event loop.

The composition root binds every socket itself (so a port in use is a clean startup error,
and port 0 reports the port it got) and runs uvicorn on it through its public API
(``Config``, ``Server.serve(sockets=...)``, ``should_exit``/``force_exit``): no uvicorn signal
handling, no lifespan, no uvicorn access log, no ``Server`` or ``Date`` header, no
proxy-header middleware (each costs time on every request).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import stat
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from torchwick.server.config.addresses import ListenAddress
from torchwick.server.config.errors import ConfigError
from torchwick.server.security.tls import TlsMaterial, load_tls_material, pem_files
from torchwick.server.settings import Settings

from .connection_guard import ConnectionGuard

BACKLOG = 2048


class ListenerServer(uvicorn.Server):
    """A uvicorn ``Server`` that leaves signals to the composition root and says when it is
    serving.

    ``Server.serve`` installs its own SIGINT/SIGTERM handlers (per server, chained), which
    would make each listener stop on its own; the composition root stops all listeners
    together after one signal, so signal capture is switched off here. ``serving`` is set
    once ``startup`` has bound the socket.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.serving = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.serving.set()


class ListenerError(Exception):
    """A listener socket could not be opened (address in use, bad host, missing TLS files)."""


def open_listener(address: ListenAddress) -> socket.socket:
    """Bind and listen on ``address`` (TCP or unix socket); raises ``ListenerError``."""
    try:
        if address.uds_path is not None:
            return _open_unix(address.uds_path)
        assert address.host is not None and address.port is not None
        family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        return socket.create_server(
            (address.host, address.port), family=family, backlog=BACKLOG, reuse_port=False
        )
    except OSError as exc:
        raise ListenerError(f"cannot listen on {address}: {exc.strerror or exc}") from None


def _open_unix(path: Path) -> socket.socket:
    if path.exists():
        if not stat.S_ISSOCK(path.stat().st_mode):
            raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # a stale socket left by a server that died
        else:
            raise OSError(errno.EADDRINUSE, "another server is listening there")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


@dataclass
class RunningListener:
    """A started uvicorn server and the task running it; ``stop`` drains and ends it."""

    server: ListenerServer
    task: asyncio.Task[None]

    async def stop(self, *, force: bool = False) -> None:
        """Stop accepting, let in-flight requests finish (unless ``force``), and wait."""
        self.server.should_exit = True
        if force:
            self.server.force_exit = True
        await asyncio.gather(self.task, return_exceptions=True)

    def force(self) -> None:
        """Stop waiting for in-flight requests (a second stop signal)."""
        self.server.force_exit = True


async def start_uvicorn(
    app: ASGIApp,
    sock: socket.socket,
    address: ListenAddress,
    settings: Settings,
    *,
    graceful_shutdown_s: int,
    guard: ConnectionGuard,
) -> RunningListener:
    """Serve ``app`` with uvicorn on an already bound socket (``Server.serve(sockets=...)``).

    The connection limits of ``guard`` (shared by all listeners; ``connection_guard.py``)
    wrap uvicorn's httptools protocol, given to uvicorn as its ``http`` protocol class.

    Returns once the listener accepts connections. Raises ``ListenerError`` when HTTPS is asked
    for without a usable ``keystore`` or ``private_key_file``/``certificate_file``, or when
    uvicorn cannot start on the socket.
    """
    material: TlsMaterial | None = None
    if address.is_tls:
        try:
            material = load_tls_material(settings)
        except ConfigError as exc:
            sock.close()
            raise ListenerError(f"cannot set up {address}: {exc}") from None
        if material is None:
            sock.close()
            raise ListenerError(
                f"{address} is https but neither keystore nor private_key_file and "
                "certificate_file are set"
            )
    with contextlib.ExitStack() as stack:
        key_file, cert_file = (
            stack.enter_context(pem_files(material)) if material is not None else (None, None)
        )
        config = uvicorn.Config(
            app,
            http=guard.protocol_class(),
            loop="none",
            ws="none",
            lifespan="off",
            interface="asgi3",
            access_log=False,
            log_config=None,
            proxy_headers=False,
            server_header=False,
            date_header=False,
            backlog=BACKLOG,
            timeout_keep_alive=settings.keep_alive_timeout_s,
            timeout_graceful_shutdown=graceful_shutdown_s,
            ssl_keyfile=key_file,
            ssl_certfile=cert_file,
        )
        try:
            # ``load`` reads the key and certificate into its SSLContext; converted keystore
            # material on disk is removed when this block ends.
            config.load()
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            sock.close()
            raise ListenerError(f"cannot set up {address}: {exc}") from None
    server = ListenerServer(config)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    serving = asyncio.ensure_future(server.serving.wait())
    await asyncio.wait({task, serving}, return_when=asyncio.FIRST_COMPLETED)
    if not server.serving.is_set():
        serving.cancel()
        try:
            task.result()
        except BaseException as exc:  # uvicorn exits the process on some startup errors
            raise ListenerError(f"cannot serve on {address}: {exc!r}") from None
        raise ListenerError(f"cannot serve on {address}: uvicorn stopped during startup")
    return RunningListener(server, task)
