"""Connection-level limits of every HTTP listener, in front of uvicorn's protocol.

uvicorn's public ``Config`` has no deadline for a request head, no cap on header size or count
with the httptools parser, no timeout for a connection that never sends a byte, and its
``limit_concurrency`` answers a bare text 503 without ``Retry-After``. ``Config(http=...)``
accepts an ``asyncio.Protocol`` class, so each listener is given ``GuardedProtocol``: it
wraps uvicorn's ``HttpToolsProtocol`` (built with the same keyword arguments uvicorn passes,
nothing else of uvicorn is touched), forwards the ``asyncio.Protocol`` calls to it, and reads
the same bytes with its own ``httptools`` parser to see where each request head begins and
ends. It enforces:

- ``request_head_timeout_s``: a connection must send a complete request head within this
  time of opening (a socket that never sends a byte is closed then), and every later head
  within this time of its first byte (slowloris). A partial head is answered 408.
- ``max_header_size`` (bytes of all header lines) and ``max_header_count``: 431; and
  ``max_url_length``: 400. The connection is closed after the answer.
- ``max_connections``, lowered to ``RLIMIT_NOFILE - fd_reserve`` so that the server keeps
  file descriptors for its workers, logs and listeners: at the cap, the oldest connection
  that has not yet sent a complete head is closed to make room (a pile of silent or slow
  sockets cannot lock out ``/ping``); when every connection is busy with a request, the new
  one is answered 503 with ``Retry-After`` and closed.

Every answer is TorchServe's error JSON. One ``ConnectionGuard`` is shared by all the HTTP
listeners of a server (file descriptors are per process).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from torchwick.server.errors import (
    BadRequest,
    HeadersTooLarge,
    Overloaded,
    RequestHeadTimeout,
    TorchwickError,
)
from torchwick.server.settings import Settings

from .responses import error_document

log = logging.getLogger("torchwick.server.api")

#: Never fewer connections than this, whatever the fd limit says.
MIN_CONNECTIONS = 16


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The limits above; ``max_connections`` is already lowered to the fd budget."""

    head_timeout_s: float
    max_header_size: int
    max_header_count: int
    max_url_length: int
    max_connections: int
    retry_after_s: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        """The settings' limits, ``max_connections`` capped by ``RLIMIT_NOFILE - fd_reserve``
        (the soft limit is first raised to the hard one, as far as the system allows)."""
        return cls(
            head_timeout_s=settings.request_head_timeout_s,
            max_header_size=settings.max_header_size,
            max_header_count=settings.max_header_count,
            max_url_length=settings.max_url_length,
            max_connections=fd_budget(settings.max_connections, settings.fd_reserve),
            retry_after_s=settings.retry_after_s,
        )


def fd_budget(wanted: int, reserve: int) -> int:
    """``wanted`` connections, at most the open-file limit minus ``reserve``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return max(MIN_CONNECTIONS, wanted)
    return max(MIN_CONNECTIONS, min(wanted, soft - reserve))


class ConnectionGuard:
    """The open connections of all listeners, oldest first, and the limits."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.open: OrderedDict[GuardedProtocol, None] = OrderedDict()
        self.refused = 0
        self.evicted = 0
        self.timed_out = 0

    def protocol_class(self) -> type[asyncio.Protocol]:
        """A ``GuardedProtocol`` subclass bound to this guard, for ``uvicorn.Config(http=)``."""
        return type("GuardedProtocol", (GuardedProtocol,), {"guard": self})

    def admit(self, connection: GuardedProtocol) -> bool:
        """Make room for ``connection``; False when every open one is inside a request."""
        if len(self.open) >= self.limits.max_connections:
            for candidate in self.open:
                if not candidate.had_head:
                    self.evicted += 1
                    candidate.drop()
                    break
            else:
                self.refused += 1
                return False
        self.open[connection] = None
        return True

    def forget(self, connection: GuardedProtocol) -> None:
        self.open.pop(connection, None)


def _raw_error(error: TorchwickError, extra: bytes = b"") -> bytes:
    body = error_document(error)
    status = error.status.http_status
    return (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n".encode()
        + b"content-type: application/json\r\nconnection: close\r\n"
        + extra
        + f"content-length: {len(body)}\r\n\r\n".encode()
        + body
    )


_REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


class GuardedProtocol(asyncio.Protocol):
    """uvicorn's httptools protocol with the limits of the module docs in front of it."""

    guard: ClassVar[ConnectionGuard]

    def __init__(self, **kwargs: Any) -> None:
        self.inner = HttpToolsProtocol(**kwargs)
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.admitted = False
        self.forwarding = True
        #: A complete request head arrived on this connection at least once.
        self.had_head = False
        self.in_head = False
        self.header_bytes = 0
        self.header_count = 0
        self.url_length = 0
        self.timer: asyncio.TimerHandle | None = None
        self.refusal: TorchwickError | None = None

    # -- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, only alike.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        limits = self.guard.limits
        if not self.guard.admit(self):
            transport.write(
                _raw_error(
                    Overloaded("Too many open connections; retry later"),
                    f"retry-after: {limits.retry_after_s}\r\n".encode(),
                )
            )
            transport.close()
            self.forwarding = False
            return
        self.admitted = True
        self._arm()
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self.forwarding:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._stop_watching()
        except httptools.HttpParserError:
            # httptools wraps an exception raised by a callback (our ``_Refused``) in a
            # parser error; anything else is a malformed request that uvicorn answers.
            if self.refusal is not None:
                self._refuse(self.refusal)
                return
            self._stop_watching()
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self.admitted:
            self.inner.eof_received()
        return None  # close the transport, as uvicorn's protocol does

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.guard.forget(self)
        if self.admitted:
            self.admitted = False
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.admitted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.admitted:
            self.inner.resume_writing()

    # -- httptools callbacks (our own parser) ---------------------------------------------------
    def on_message_begin(self) -> None:
        self.in_head = True
        self.header_bytes = 0
        self.header_count = 0
        self.url_length = 0
        if self.timer is None:
            self._arm()

    def on_url(self, url: bytes) -> None:
        self.url_length += len(url)
        limit = self.guard.limits.max_url_length
        if self.url_length > limit:
            self._stop_parsing(BadRequest(f"Request URL is longer than max_url_length ({limit})"))

    def on_header(self, name: bytes, value: bytes) -> None:
        limits = self.guard.limits
        self.header_count += 1
        self.header_bytes += len(name) + len(value) + 4
        if self.header_count > limits.max_header_count:
            self._stop_parsing(
                HeadersTooLarge(
                    f"Request has more than max_header_count ({limits.max_header_count}) headers"
                )
            )
        if self.header_bytes > limits.max_header_size:
            self._stop_parsing(
                HeadersTooLarge(
                    f"Request headers exceed max_header_size ({limits.max_header_size} bytes)"
                )
            )

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.had_head = True
        self._disarm()

    # -- enforcement ----------------------------------------------------------------------------
    def _stop_parsing(self, error: TorchwickError) -> None:
        self.refusal = error
        raise _Refused(error.message)

    def _arm(self) -> None:
        self.timer = self.loop.call_later(self.guard.limits.head_timeout_s, self._head_timeout)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _head_timeout(self) -> None:
        self.timer = None
        self.guard.timed_out += 1
        if self.in_head:
            limit = self.guard.limits.head_timeout_s
            self._refuse(RequestHeadTimeout(f"Request head not received within {limit:g} s"))
        else:
            self.drop()

    def _refuse(self, error: TorchwickError) -> None:
        """Answer ``error`` ourselves and close; uvicorn sees no more of this connection."""
        self.forwarding = False
        self._disarm()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_raw_error(error))
            self.transport.close()

    def _stop_watching(self) -> None:
        self._disarm()
        self.had_head = True
        self.parser = None  # type: ignore[assignment]
        self.data_received = self.inner.data_received  # type: ignore[method-assign]

    def drop(self) -> None:
        """Close without an answer (nothing or only part of a head was received)."""
        self.forwarding = False
        self._disarm()
        if self.transport is not None:
            self.transport.close()


class _Refused(Exception):
    """Raised from a parser callback to stop parsing; the error is kept on the protocol."""
