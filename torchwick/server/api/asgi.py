"""A small raw-ASGI toolkit: request state, response writing and the error JSON.

The REST adapters run on the hot path of every inference, so this module avoids frameworks
and keeps per-request work to a handful of allocations: one ``Request`` object, one header
list and two ``send`` calls for an ordinary response. Header values are ``bytes`` throughout,
as ASGI wants them.

Every response written through ``Request`` carries TorchServe's fixed headers
(``x-request-id``, ``Pragma``, ``Cache-Control``, ``Expires``, CORS when configured) and
records its status on the request so that the listener can count it and log it.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from torchwick.server.errors import PayloadTooLarge, TorchwickError
from torchwick.server.settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
RawHeaders = list[tuple[bytes, bytes]]

JSON_CONTENT_TYPE = b"application/json"

#: Sent on every response, JSON or not (TorchServe's NettyUtils does the same).
NO_CACHE_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"pragma", b"no-cache"),
    (b"cache-control", b"no-cache; no-store, must-revalidate, private"),
    (b"expires", b"Thu, 01 Jan 1970 00:00:00 UTC"),
)


# Request ids only need to be unique, not secret: a PRNG seeded from the OS is 4x cheaper
# per request than ``uuid.uuid4()`` (which reads /dev/urandom every time).
_ids = random.Random(os.urandom(32))
_V4_CLEAR = 0xFFFFFFFFFFFF0FFF3FFFFFFFFFFFFFFF
_V4_SET = 0x00000000000040008000000000000000


def new_request_id() -> str:
    """A random (version 4, RFC 4122 variant) UUID string."""
    value = "%032x" % ((_ids.getrandbits(128) & _V4_CLEAR) | _V4_SET)
    return f"{value[:8]}-{value[8:12]}-{value[12:16]}-{value[16:20]}-{value[20:]}"


def fixed_headers(settings: Settings) -> tuple[tuple[bytes, bytes], ...]:
    """The headers every response of a listener carries: no-cache, plus CORS when set."""
    headers = list(NO_CACHE_HEADERS)
    cors = (
        (b"access-control-allow-origin", settings.cors_allowed_origin),
        (b"access-control-allow-methods", settings.cors_allowed_methods),
        (b"access-control-allow-headers", settings.cors_allowed_headers),
    )
    headers.extend((name, value.encode("latin-1")) for name, value in cors if value)
    return tuple(headers)


def json_bytes(value: Any) -> bytes:
    """Frontend JSON as TorchServe writes it: 2-space indent, no HTML escaping, ``\\n`` last."""
    return (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def error_document(error: TorchwickError) -> bytes:
    """The ``{"code", "type", "message"}`` body for an error, status from ``ERROR_TABLE``."""
    status = error.status
    return json_bytes(
        {"code": status.http_status, "type": status.type_name, "message": error.message}
    )


class Request:
    """One HTTP request in flight, and the writer of its response.

    ``status`` is 0 until a response starts; afterwards it is the status sent. ``params``
    holds the path captures of the matched route. The query string is parsed on first use.
    ``started`` is the ``time.perf_counter()`` reading when the request arrived.
    """

    __slots__ = (
        "_query",
        "fixed",
        "method",
        "params",
        "path",
        "receive",
        "request_id",
        "scope",
        "send",
        "started",
        "status",
    )

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        request_id: str,
        fixed: tuple[tuple[bytes, bytes], ...],
        started: float = 0.0,
    ) -> None:
        self.scope = scope
        self.started = started
        self.receive = receive
        self.send = send
        self.request_id = request_id
        self.fixed = fixed
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.params: dict[str, str] = {}
        self.status = 0
        self._query: dict[str, str] | None = None

    # -- reading -------------------------------------------------------------------------

    @property
    def query(self) -> dict[str, str]:
        """Query parameters; for a repeated name the last value wins (TorchServe's rule)."""
        if self._query is None:
            raw: bytes = self.scope.get("query_string", b"")
            self._query = dict(parse_qsl(raw.decode("latin-1"), keep_blank_values=True))
        return self._query

    def query_all(self, name: str) -> list[str]:
        """Every value of a repeated query parameter, in order."""
        raw: bytes = self.scope.get("query_string", b"")
        pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
        return [value for key, value in pairs if key == name]

    def header(self, name: bytes) -> bytes | None:
        """The first value of a request header (``name`` lower-case), or ``None``."""
        for key, value in self.scope["headers"]:
            if key == name:
                return value  # type: ignore[no-any-return]
        return None

    async def read_body(self, limit: int) -> bytes:
        """The whole request body, refusing more than ``limit`` bytes.

        A declared ``Content-Length`` over the limit is refused before anything is read; a
        chunked body is refused as soon as what arrived passes the limit. Raises
        ``PayloadTooLarge`` (413) in both cases; the caller closes the connection, since
        the rest of the body is never read.
        """
        declared = self.header(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                length = -1
            if length > limit:
                raise PayloadTooLarge(_too_large_message(length, limit))
        message = await self.receive()
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            if len(body) > limit:
                raise PayloadTooLarge(_too_large_message(len(body), limit))
            return body
        chunks = [body]
        size = len(body)
        while message.get("more_body", False):
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(_too_large_message(size, limit))
            chunks.append(chunk)
        return b"".join(chunks)

    # -- writing -------------------------------------------------------------------------

    def base_headers(self) -> RawHeaders:
        """A fresh header list holding this request's id and the listener's fixed headers."""
        headers: RawHeaders = [(b"x-request-id", self.request_id.encode("latin-1"))]
        headers.extend(self.fixed)
        return headers

    async def respond(
        self,
        status: int,
        body: bytes,
        content_type: bytes | None = None,
        extra: RawHeaders | None = None,
        *,
        close: bool = False,
    ) -> None:
        """Send a complete response with ``Content-Length``.

        ``content_type`` ``None`` sends no Content-Type at all (TorchServe does the same for
        inference answers whose handler set none). ``close`` asks the server to drop the
        connection afterwards, for answers given before the request body was read.
        """
        headers = self.base_headers()
        if content_type is not None:
            headers.append((b"content-type", content_type))
        if extra:
            headers.extend(extra)
        headers.append((b"content-length", str(len(body)).encode("latin-1")))
        if close:
            headers.append((b"connection", b"close"))
        self.status = status
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})

    async def respond_json(self, status: int, value: Any) -> None:
        """Send frontend-generated JSON (pretty, newline-terminated, application/json)."""
        await self.respond(status, json_bytes(value), JSON_CONTENT_TYPE)

    async def respond_error(self, error: TorchwickError, *, close: bool = False) -> None:
        """Send the error JSON with the status ``ERROR_TABLE`` gives the error's type."""
        await self.respond(
            error.status.http_status, error_document(error), JSON_CONTENT_TYPE, close=close
        )

    async def start_stream(
        self, status: int, content_type: bytes | None, extra: RawHeaders | None
    ) -> None:
        """Start a chunked response (no Content-Length); follow with ``stream_chunk``."""
        headers = self.base_headers()
        if content_type is not None:
            headers.append((b"content-type", content_type))
        if extra:
            headers.extend(extra)
        self.status = status
        await self.send({"type": "http.response.start", "status": status, "headers": headers})

    async def stream_chunk(self, body: bytes, *, last: bool) -> None:
        """Send one chunk of a started stream; ``last`` ends the response."""
        await self.send({"type": "http.response.body", "body": body, "more_body": not last})


class ClientDisconnected(Exception):
    """The client went away before its request body was complete."""


def _too_large_message(size: int, limit: int) -> str:
    return f"Request body of {size} bytes exceeds max_request_size of {limit} bytes"


Endpoint = Callable[[Request], Awaitable[None]]
