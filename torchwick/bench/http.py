"""A cheap HTTP/1.1 keep-alive client on raw asyncio streams.

One :class:`HttpSlot` is one client connection that sends the same pre-built request over and
over: it opens its TCP connection lazily, reuses it while the server keeps it alive, and opens a
new one after the server closed it. Responses are framed by ``Content-Length``, chunked
encoding, or the connection's end; their bodies are read and dropped. Nothing is parsed beyond
the status line and the framing headers, which keeps the client's cost per request small (see
``docs/bench.md`` for what it reaches on this project's machine).

This is the approach of ``benchmarks/bench_client.py`` (which now imports its request builder
and response reader from here).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import ssl
from collections.abc import Sequence

NO_BODY_STATUSES = frozenset({204, 304})


class ExchangeError(Exception):
    """One request failed at the connection level (refused, reset, closed early, bad reply)."""


def build_request(
    method: str,
    host_header: str,
    path: str,
    body: bytes | None,
    headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    """One complete HTTP/1.1 request, sent as is for every request of a point.

    ``headers`` are added verbatim after ``Host`` (``Content-Type`` and ``Authorization`` among
    them); ``Content-Length`` is added when there is a body. Raises ``ValueError`` when a header
    name or value holds a line break (it would smuggle a second header or request).
    """
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host_header}"]
    for name, value in headers:
        if any(c in name + value for c in "\r\n") or not name or ":" in name:
            raise ValueError(f"invalid header {name!r}")
        lines.append(f"{name}: {value}")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + (body or b"")


async def read_response(
    reader: asyncio.StreamReader, *, head_request: bool = False
) -> tuple[int, bool]:
    """Read one whole response; return (status, whether the connection stays open).

    ``head_request``: the answer to a HEAD request, which has no body whatever its headers say.

    Raises ``ValueError`` for a status line that is not HTTP and the stream errors of
    ``asyncio`` (``IncompleteReadError``, ``LimitOverrunError``) for a short or huge head.
    """
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1."):
        raise ValueError("not an HTTP/1.x response")
    status = int(head[9:12])
    lower = head.lower()
    keep_alive = b"\r\nconnection: close" not in lower
    if head_request or status in NO_BODY_STATUSES or 100 <= status < 200:
        return status, keep_alive
    position = lower.find(b"\r\ncontent-length:")
    if position >= 0:
        end = lower.index(b"\r\n", position + 2)
        length = int(lower[position + 17 : end])
        if length:
            await reader.readexactly(length)
    elif b"\r\ntransfer-encoding: chunked" in lower:
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0], 16)
            await reader.readexactly(size + 2)  # the chunk and its CRLF (or the final CRLF)
            if size == 0:
                break
    else:
        await reader.read()  # delimited by the connection's end
        keep_alive = False
    return status, keep_alive


class HttpSlot:
    """One keep-alive client connection sending ``request`` to ``host:port``.

    ``host`` is the address already checked by the target policy (an IP address), so the
    connection goes where the check looked. ``tls`` wraps the connection (``server_hostname``
    is the URL's host).
    """

    def __init__(
        self,
        host: str,
        port: int,
        request: bytes,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._request = request
        self._tls = tls
        self._server_hostname = server_hostname
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._head = request.startswith(b"HEAD ")

    async def send(self) -> int:
        """Send the request once and read the whole response; return its status.

        Raises :class:`ExchangeError` when the connection cannot be opened or fails during the
        exchange (the connection is then closed; the next ``send`` opens a new one).
        """
        try:
            if self._writer is None or self._reader is None:
                self._reader, self._writer = await asyncio.open_connection(
                    self._host,
                    self._port,
                    ssl=self._tls,
                    server_hostname=self._server_hostname if self._tls else None,
                )
            self._writer.write(self._request)
            await self._writer.drain()
            status, keep_alive = await read_response(self._reader, head_request=self._head)
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
            self.abort()
            raise ExchangeError(f"{type(e).__name__}: {e}") from e
        if not keep_alive:
            self.abort()
        return status

    def abort(self) -> None:
        """Drop the connection at once (a request in flight fails with ``ExchangeError``)."""
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.transport.abort()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when it is installed (it is with torchwick on Linux), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def loop_name() -> str:
    """``uvloop X.Y`` or ``asyncio``: which loop :func:`new_event_loop` gives."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    try:
        return f"uvloop {importlib.metadata.version('uvloop')}"
    except importlib.metadata.PackageNotFoundError:
        return "uvloop"
