"""The ASGI application of one HTTP listener: route, authenticate, answer, count, log.

One ``ListenerApp`` serves one bound address. Its router holds the routes of every API that
shares that address (inference, management and metrics may share one). For every request it

1. gives the request a uuid4 id (``x-request-id``, and the worker's request id);
2. resolves the route (404 unknown path, 405 wrong method);
3. checks the bearer token the route needs, when token authorization is on (401);
4. runs the endpoint; a ``TorchwickError`` becomes the error JSON with the status from
   ``ERROR_TABLE``; anything else is logged with its traceback and answered 500;
5. counts the response (Requests2XX/4XX/5XX) and queues an access-log line.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from torchwick.server.errors import InternalError, PayloadTooLarge, TorchwickError

from .asgi import ClientDisconnected, Receive, Request, Scope, Send, new_request_id
from .router import AuthKind, Router
from .tokens_port import TokenChecker

log = logging.getLogger(__name__)

#: Status recorded for requests whose client left before an answer could be sent
#: (nginx's convention; never sent on the wire).
CLIENT_CLOSED = 499


class ResponseCounter(Protocol):
    """Counts responses by status (``FrontendMetrics.count_response``)."""

    def count_response(self, status: int) -> None:
        """Count one response."""


class AccessRecorder(Protocol):
    """Takes one access-log entry (``AccessLog.record``)."""

    def record(
        self,
        *,
        client: tuple[str, int] | None,
        method: str,
        path: str,
        query: bytes,
        version: str,
        status: int,
        ms: float,
    ) -> None:
        """Queue one line (formatting happens later, off the event loop)."""


class ListenerApp:
    """The raw ASGI app of one listener (see the module docs)."""

    def __init__(
        self,
        router: Router,
        fixed_headers: tuple[tuple[bytes, bytes], ...],
        *,
        tokens: TokenChecker | None,
        metrics: ResponseCounter,
        access_log: AccessRecorder | None,
    ) -> None:
        self.router = router
        self.fixed_headers = fixed_headers
        self.tokens = tokens
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            # lifespan is off and websockets are disabled, so nothing else should arrive.
            return
        started = time.perf_counter()
        request = Request(
            scope,
            receive,
            send,
            request_id=new_request_id(),
            fixed=self.fixed_headers,
            started=started,
        )
        try:
            route, endpoint, request.params = self.router.resolve(request.method, request.path)
            if self.tokens is not None and route.auth != "none":
                self._authenticate(route.auth, request)
            await endpoint(request)
        except TorchwickError as error:
            await self._fail(request, error)
        except ClientDisconnected:
            request.status = request.status or CLIENT_CLOSED
        except Exception:
            log.exception("unexpected error serving %s %s", request.method, request.path)
            await self._fail(request, InternalError("Internal server error; see the server log"))
        if request.status != CLIENT_CLOSED:  # nothing was sent, so there is nothing to count
            self.metrics.count_response(request.status)
        if self.access_log is not None:
            self._log_access(request)

    def _authenticate(self, kind: AuthKind, request: Request) -> None:
        assert self.tokens is not None
        raw = request.header(b"authorization")
        header = None if raw is None else raw.decode("latin-1")
        if kind == "api":
            self.tokens.check_api_key(header)
        elif kind in {"inference", "management"}:
            self.tokens.check(kind, header)

    async def _fail(self, request: Request, error: TorchwickError) -> None:
        if request.status:
            # The response already started (a stream); the error cannot be sent any more.
            log.warning(
                "request %s failed after its response started: %s", request.request_id, error
            )
            return
        # An oversized body is left unread, so the connection cannot be reused.
        await request.respond_error(error, close=isinstance(error, PayloadTooLarge))

    def _log_access(self, request: Request) -> None:
        assert self.access_log is not None
        scope = request.scope
        self.access_log.record(
            client=scope.get("client"),
            method=request.method,
            path=request.path,
            query=scope.get("query_string", b""),
            version=scope.get("http_version", "1.1"),
            status=request.status,
            ms=(time.perf_counter() - request.started) * 1000.0,
        )
