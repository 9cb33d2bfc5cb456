"""A local HTTP origin for SSRF tests: a static-file-server-like handler on 127.0.0.1.

Like most real file servers it decodes and normalises the request path (``/models/../x`` is
``/x``), which is what makes an unnormalised allowlist check exploitable. ``/private/...`` is
what an attacker must never reach; every request path is recorded.
"""

from __future__ import annotations

import http.server
import posixpath
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

#: How long a stalling or dripping answer goes on at most (the server must give up first).
MAX_SLOW_S = 25.0


@dataclass
class Origin:
    """Files by normalised path, special behaviours, and what was asked for."""

    files: dict[str, bytes] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    #: Paths answered without a Content-Length (body ends when the connection closes).
    unsized: set[str] = field(default_factory=set)
    requests: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    base: str = ""
    port: int = 0

    def private_hits(self) -> list[str]:
        """Requests that reached ``/private/`` after the origin's own normalisation."""
        return [path for path in self.requests if _normal(path).startswith("/private/")]


def _normal(raw: str) -> str:
    return posixpath.normpath(unquote(urlsplit(raw).path))


def handler_for(origin: Origin) -> type[http.server.BaseHTTPRequestHandler]:
    """A request handler class serving ``origin``."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            origin.requests.append(self.path)
            path = _normal(self.path)
            special: dict[str, Callable[[], None]] = {
                "/models/drip.mar": self._drip,
                "/models/stall.mar": self._stall,
            }
            if path in special:
                special[path]()
            elif path in origin.redirects:
                self.send_response(302)
                self.send_header("Location", origin.redirects[path])
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif path in origin.files:
                body = origin.files[path]
                self.send_response(200)
                if path not in origin.unsized:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

        def _drip(self) -> None:
            # One byte every 0.2 s, no Content-Length: never done, never silent for long.
            self.send_response(200)
            self.end_headers()
            while not origin.stop.wait(0.2):
                try:
                    self.wfile.write(b"P")
                    self.wfile.flush()
                except OSError:
                    return

        def _stall(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.flush()
            origin.stop.wait(MAX_SLOW_S)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler
