"""Response bytes shared by every HTTP route: request ids, fixed headers, JSON, error bodies,
and the two raw-ASGI helpers the inference hot path uses (send a whole response, read a
bounded body).

The inference path writes raw ASGI messages instead of Starlette ``Response`` objects: per
request that saves building a response object and a header list twice (measured in
``benchmarks/bench_http_layer.py``). Everything else uses FastAPI/Starlette responses.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from torchwick.server.errors import InvalidToken, PayloadTooLarge, TorchwickError
from torchwick.server.settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
RawHeaders = list[tuple[bytes, bytes]]

JSON_CONTENT_TYPE = b"application/json"
NOT_FOUND_MESSAGE = "Requested resource is not found, please refer to API document."
NOT_ALLOWED_MESSAGE = "Requested method is not allowed, please refer to API document."

#: Scope keys the serving middleware sets for the routes below it.
REQUEST_ID_KEY = "torchwick.request_id"
STARTED_KEY = "torchwick.started"
#: Set by a route when its client left before an answer could be sent.
CLIENT_GONE_KEY = "torchwick.client_gone"
#: Set by the inference routes: ``(model, version)`` asked for, then the version that served
#: (for the access log).
MODEL_KEY = "torchwick.model"

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


async def send_response(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes | None = None,
    extra: RawHeaders | None = None,
    *,
    close: bool = False,
) -> None:
    """Send a complete response with ``Content-Length`` (and no Content-Type when
    ``content_type`` is ``None``, as TorchServe does for handlers that set none). ``close``
    asks the server to drop the connection afterwards (an answer given before the request
    body was read). The serving middleware adds the request id and the fixed headers."""
    headers: RawHeaders = [(b"content-length", str(len(body)).encode("latin-1"))]
    if content_type is not None:
        headers.append((b"content-type", content_type))
    if extra:
        headers.extend(extra)
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


#: RFC 6750: a 401 names the authentication scheme the server expects.
WWW_AUTHENTICATE = (b"www-authenticate", b"Bearer")


def error_headers(error: TorchwickError) -> RawHeaders:
    """Headers an error answer carries besides its JSON (``WWW-Authenticate`` on a 401;
    ``Retry-After`` on a 503 is added by the serving middleware, which knows the setting)."""
    return [WWW_AUTHENTICATE] if isinstance(error, InvalidToken) else []


async def send_error(send: Send, error: TorchwickError, *, close: bool = False) -> None:
    """Send the error JSON with the status ``ERROR_TABLE`` gives the error's type."""
    await send_response(
        send,
        error.status.http_status,
        error_document(error),
        JSON_CONTENT_TYPE,
        error_headers(error),
        close=close,
    )


class ClientDisconnected(Exception):
    """The client went away before its request body was complete."""


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a request header (``name`` lower-case), or ``None``."""
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


def declared_length(scope: Scope) -> int | None:
    """The request's ``Content-Length`` as a number (``None`` when absent or garbage)."""
    raw = header(scope, b"content-length")
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return None


def too_large(size: int, limit: int) -> PayloadTooLarge:
    """The 413 for a body of ``size`` bytes over ``limit``."""
    return PayloadTooLarge(
        f"Request body of {size} bytes exceeds max_request_size of {limit} bytes"
    )


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body, refusing more than ``limit`` bytes.

    A declared ``Content-Length`` over the limit was already refused, unread, by the serving
    middleware; a chunked body is refused as soon as what arrived passes the limit
    (``PayloadTooLarge``; the caller closes the connection, since the rest is never read).
    Raises ``ClientDisconnected`` when the client leaves mid-body.
    """
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnected
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise too_large(len(body), limit)
        return body
    chunks = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(size, limit)
        chunks.append(chunk)
    return b"".join(chunks)
