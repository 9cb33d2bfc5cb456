"""The outermost ASGI middleware of every listener: ids, fixed headers, limits, counting, logs.

For every HTTP request it

1. gives the request a uuid4 id (``x-request-id`` on the response, and the worker's request
   id), and notes when it arrived;
2. treats a trailing slash as absent (``/models/x/`` is ``/models/x``, as in TorchServe; no
   redirect is sent);
3. refuses a declared ``Content-Length`` over ``max_request_size`` with 413 before anything
   of the body is read, and closes that connection (the body stays unread);
3a. refuses a path holding a control character (``%00``...) with 400; refuses a request with
   503 while ``max_inflight_requests`` requests (of all listeners together) are being served
   (``/ping`` and ``/metrics`` are exempt, so health checks and scrapes see the server);
   every 503, whatever sent it, carries ``Retry-After: retry_after_s``;
4. runs the app (the hot-path router, falling through to FastAPI); adds the request id,
   no-cache and CORS headers to whatever it sends;
5. counts the response (Requests2XX/4XX/5XX) and queues an access-log line.

A ``TorchwickError`` from a hot-path route is answered here with the error JSON. An exception
nobody answered is answered 500 with the error JSON; one FastAPI already answered (its
server-error layer sends the JSON 500 and re-raises so that someone logs it) is only logged.
Either way it is logged here with its traceback and absorbed, so uvicorn never prints a
second, bare traceback.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Protocol

from starlette.types import ASGIApp

from torchwick.server.errors import (
    BadRequest,
    InternalError,
    Overloaded,
    PayloadTooLarge,
    TorchwickError,
)
from torchwick.server.observability.access_log import AccessRecorder
from torchwick.server.observability.served import SERVED

from .responses import (
    CLIENT_GONE_KEY,
    MODEL_KEY,
    REQUEST_ID_KEY,
    STARTED_KEY,
    Message,
    Receive,
    Scope,
    Send,
    declared_length,
    new_request_id,
    send_error,
    too_large,
)

log = logging.getLogger("torchwick.server.api")

#: Status recorded for requests whose client left before an answer could be sent
#: (nginx's convention; never sent on the wire).
CLIENT_CLOSED = 499
_OVERLOADED = "Server is busy (max_inflight_requests reached); retry later"
#: A decoded path with a control character (``%00``, ``%0a``...) names nothing that exists.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_MESSAGE = "Request path contains a control character"


class ResponseCounter(Protocol):
    """Counts responses by status (``FrontendMetrics.count_response``)."""

    def count_response(self, status: int) -> None:
        """Count one response."""


class InflightLimit:
    """Requests being served by all listeners of a server, and the cap on them."""

    def __init__(self, limit: int, retry_after_s: int) -> None:
        self.limit = limit
        self.current = 0
        self.rejected = 0
        self.retry_after = (b"retry-after", str(retry_after_s).encode("latin-1"))


#: Paths the in-flight cap never refuses.
_EXEMPT = frozenset({"/ping", "/metrics"})


class ServingMiddleware:
    """See the module docs. ``fixed`` are the listener's fixed headers."""

    def __init__(
        self,
        app: ASGIApp,
        fixed: tuple[tuple[bytes, bytes], ...],
        *,
        max_request_size: int,
        metrics: ResponseCounter,
        access_log: AccessRecorder | None,
        inflight: InflightLimit,
    ) -> None:
        self.app = app
        self.inflight = inflight
        self.fixed = fixed
        self.max_request_size = max_request_size
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        SERVED.set(None)
        request_id = new_request_id()
        path: str = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            scope["path"] = path.rstrip("/") or "/"
        scope[REQUEST_ID_KEY] = request_id
        scope[STARTED_KEY] = started
        added = ((b"x-request-id", request_id.encode("latin-1")), *self.fixed)
        status = 0
        inflight = self.inflight
        sent = 0

        async def send_with_headers(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.get("headers")
                message["headers"] = [*added, *headers] if headers else list(added)
                if status == 503:
                    message["headers"].append(inflight.retry_after)
            else:
                sent += len(message.get("body", b""))
            await send(message)

        counted = False
        try:
            length = declared_length(scope)
            if length is not None and length > self.max_request_size:
                await send_error(
                    send_with_headers, too_large(length, self.max_request_size), close=True
                )
            elif _CONTROL.search(scope["path"]):
                await send_error(send_with_headers, BadRequest(_CONTROL_MESSAGE))
            elif inflight.current >= inflight.limit and scope["path"] not in _EXEMPT:
                inflight.rejected += 1
                await send_error(send_with_headers, Overloaded(_OVERLOADED))
            else:
                inflight.current += 1
                counted = True
                await self.app(scope, receive, send_with_headers)
        except TorchwickError as error:
            # From a hot-path route (FastAPI answers its own routes' errors itself).
            if status:
                log.warning("request %s failed after its response started: %s", request_id, error)
            else:
                await send_error(send_with_headers, error, close=isinstance(error, PayloadTooLarge))
        except Exception:
            log.exception("unexpected error serving %s %s", scope["method"], scope["path"])
            if not status:
                internal = InternalError("Internal server error; see the server log")
                await send_error(send_with_headers, internal)
        finally:
            if counted:
                inflight.current -= 1
        if scope.get(CLIENT_GONE_KEY) and not status:
            status = CLIENT_CLOSED
        else:  # nothing was sent to a client that left, so there is nothing to count
            self.metrics.count_response(status or 500)
        if self.access_log is not None:
            self.access_log.record(
                client=scope.get("client"),
                method=scope["method"],
                path=scope["path"],
                query=scope.get("query_string", b""),
                version=scope.get("http_version", "1.1"),
                status=status,
                ms=(time.perf_counter() - started) * 1000.0,
                request_id=request_id,
                model=scope.get(MODEL_KEY) or SERVED.get(),
                sent=sent,
            )
