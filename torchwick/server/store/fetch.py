"""Blocking http(s) download of an archive, bounded in size, in time and in where it may go.

``HttpFetcher(policy, read_timeout_s, deadline_s)(url, destination, max_bytes)``:

- only http and https are spoken (no ``file:``, ``ftp:`` or ``data:`` handler exists behind a
  redirect); every redirect target is normalised and checked against ``allowed_urls`` like the
  first URL, and followed in its canonical form; one that is not allowed ends the download;
- ``read_timeout_s`` bounds connecting and every single read; ``deadline_s`` bounds the whole
  download, headers included: when it passes, a watchdog shuts the socket down, so a server
  that drips one byte just inside the read timeout cannot hold a registration forever;
- ``max_bytes`` is checked against ``Content-Length`` before the body and on every chunk.

Every failure is a ``FetchError`` (an ``OSError``) whose ``reason`` is one line that is safe to
show the client; other ``OSError``s (connection refused, TLS) pass through as they are.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import IO, Any

from torchwick.server.errors import TorchwickError

from .urls import UrlPolicy

_CHUNK = 1 << 20


class FetchError(OSError):
    """A download refused or cut short; ``reason`` says why in one client-safe line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Deadline:
    """Shuts down every registered socket once ``seconds`` have passed."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._expires = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.expired = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def register(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shutdown(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shutdown(sock)

    def check(self) -> None:
        """Raise ``FetchError`` when the deadline has passed."""
        if self.expired or time.monotonic() >= self._expires:
            self.expired = True
            raise self.error()

    def error(self) -> FetchError:
        return FetchError(f"the download took longer than download_timeout_s={self.seconds:g}")

    def cancel(self) -> None:
        self._timer.cancel()


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed: nothing left to interrupt
        sock.shutdown(socket.SHUT_RDWR)


class _HTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args: Any, deadline: _Deadline, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline = deadline

    def connect(self) -> None:
        super().connect()
        self._deadline.register(self.sock)


class _HTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args: Any, deadline: _Deadline, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline = deadline

    def connect(self) -> None:
        super().connect()
        self._deadline.register(self.sock)


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._connection = functools.partial(_HTTPConnection, deadline=deadline)

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._connection, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._connection = functools.partial(_HTTPSConnection, deadline=deadline)

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._connection, req, context=self._context)  # type: ignore[attr-defined]


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to an http(s) URL whose canonical form ``allowed_urls`` allows.

    The check runs before urllib's own (which answers a redirect to ``file:`` with an opaque
    HTTPError), so every refusal names the redirect.
    """

    def __init__(self, policy: UrlPolicy) -> None:
        super().__init__()
        self._policy = policy

    def http_error_302(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Any,
    ) -> Any:
        location = headers.get("location") or headers.get("uri")
        if location:
            self._checked(urllib.parse.urljoin(req.full_url, location))
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

    def redirect_request(  # noqa: PLR0917 - the signature urllib calls
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        return super().redirect_request(req, fp, code, msg, headers, self._checked(newurl))

    def _checked(self, newurl: str) -> str:
        """The canonical form of an allowed redirect target; ``FetchError`` otherwise."""
        refused = FetchError(f"redirect to a URL that is not allowed: {_printable(newurl)}")
        try:
            normal = self._policy.check(newurl)
        except TorchwickError as exc:
            raise refused from exc
        if normal.scheme not in ("http", "https"):
            raise refused
        return normal.request_url


def _printable(text: str, limit: int = 200) -> str:
    """``text`` with control characters escaped and cut to ``limit`` (it goes into a message)."""
    shown = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text[:limit])
    return shown + ("..." if len(text) > limit else "")


class HttpFetcher:
    """Blocking http(s) download with checked redirects, size cap and time limits."""

    def __init__(
        self, policy: UrlPolicy, *, read_timeout_s: float = 60.0, deadline_s: float = 1800.0
    ) -> None:
        self._policy = policy
        self._read_timeout = read_timeout_s
        self._deadline_s = deadline_s

    def __call__(self, url: str, destination: IO[bytes], max_bytes: int) -> None:
        """Write the body of ``url`` (already checked and canonical) to ``destination``.

        Raises ``FetchError`` (refused redirect, HTTP error status, too large, too slow) or
        another ``OSError`` for connection failures.
        """
        deadline = _Deadline(self._deadline_s)
        # Only the handlers needed; env proxies are honoured as urllib does by default.
        opener = urllib.request.OpenerDirector()
        for handler in (
            urllib.request.ProxyHandler(),
            _HTTPHandler(deadline),
            _HTTPSHandler(deadline),
            urllib.request.HTTPDefaultErrorHandler(),
            urllib.request.HTTPErrorProcessor(),
            _CheckedRedirects(self._policy),
        ):
            opener.add_handler(handler)
        try:
            self._fetch(opener, url, destination, max_bytes, deadline)
        except urllib.error.HTTPError as exc:
            raise FetchError(f"the origin answered HTTP {exc.code}") from exc
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, FetchError):
                raise exc.reason from exc
            if deadline.expired:
                raise deadline.error() from exc
            if isinstance(exc.reason, TimeoutError):
                raise self._read_timeout_error() from exc
            raise FetchError(f"cannot connect: {_reason(exc.reason)}") from exc
        except TimeoutError as exc:
            raise (deadline.error() if deadline.expired else self._read_timeout_error()) from exc
        except (OSError, http.client.HTTPException) as exc:
            if deadline.expired:
                raise deadline.error() from exc
            raise
        finally:
            deadline.cancel()

    def _read_timeout_error(self) -> FetchError:
        return FetchError(
            f"no data from the origin for download_read_timeout_s={self._read_timeout:g}"
        )

    def _fetch(
        self,
        opener: urllib.request.OpenerDirector,
        url: str,
        destination: IO[bytes],
        max_bytes: int,
        deadline: _Deadline,
    ) -> None:
        too_large = FetchError(f"the archive is larger than max_download_size={max_bytes} bytes")
        with opener.open(url, timeout=self._read_timeout) as response:
            deadline.check()
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
                raise too_large
            received = 0
            # read1: at most one read of the socket per call, so the deadline is looked at
            # between reads even when the origin sends a trickle.
            while chunk := response.read1(_CHUNK):
                deadline.check()
                received += len(chunk)
                if received > max_bytes:
                    raise too_large
                destination.write(chunk)
            deadline.check()


def _reason(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return _printable(str(reason))
