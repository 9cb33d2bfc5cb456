"""gRPC calls in the access log, next to the HTTP requests (an ``aio`` server interceptor).

``AccessInterceptor`` is the outermost interceptor, so calls refused by the token check are
logged too. A call is written the way an HTTP/2 proxy sees it, ``POST /<service>/<method>
HTTP/2``, with the HTTP status REST would have answered (the typed error's or the handler's
status, noted by ``grpc.status``; for a code no typed error produced, ``OK`` 200, ``CANCELLED``
499, else ``errors.http_status_for_grpc``) and the gRPC status name itself
(``grpc=NOT_FOUND``). ``model`` and
``version`` are the version the data plane routed the call to (``observability.served``),
``bytes`` the serialized size of the answer messages.

Failure mode: none of its own; a call's outcome is observed, never changed (exceptions are
re-raised as they came).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from torchwick.server.errors import http_status_for_grpc
from torchwick.server.observability.access_log import AccessRecorder
from torchwick.server.observability.served import ANSWERED, SERVED

Context = aio.ServicerContext[Any, Any]
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Any]]


def peer_address(peer: str | None) -> tuple[str, int] | None:
    """``ipv4:1.2.3.4:5``/``ipv6:[::1]:5`` -> ``(host, port)``; ``None`` for anything else."""
    if not peer or not peer.startswith(("ipv4:", "ipv6:")):
        return None
    host, _, port = peer[5:].rpartition(":")
    if not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _size(message: Any) -> int:
    byte_size = getattr(message, "ByteSize", None)
    return int(byte_size()) if byte_size is not None else 0


class _Call:
    """One call's facts, written once it ends."""

    def __init__(self, log: AccessRecorder, method: str, context: Context) -> None:
        self.log = log
        self.method = method
        self.context = context
        self.started = time.perf_counter()
        self.code = grpc.StatusCode.OK
        self.sent = 0
        SERVED.set(None)
        ANSWERED.set(None)

    def failed(self, exc: BaseException) -> None:
        if isinstance(exc, asyncio.CancelledError):
            self.code = grpc.StatusCode.CANCELLED
        else:
            self.code = grpc.StatusCode.UNKNOWN

    def write(self) -> None:
        # A code the servicer set (``set_code``, ``abort``) is the call's real outcome.
        code = self.context.code()
        if isinstance(code, grpc.StatusCode):
            self.code = code
        self.log.record(
            client=peer_address(self.context.peer()),
            method="POST",
            path=self.method,
            query=b"",
            version="2",
            status=ANSWERED.get() or http_status_for_grpc(self.code.name),
            ms=(time.perf_counter() - self.started) * 1000.0,
            model=SERVED.get(),
            sent=self.sent,
            grpc_status=self.code.name,
        )


def _logged(behavior: Any, log: AccessRecorder, method: str) -> Any:
    if inspect.isasyncgenfunction(behavior):

        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            call = _Call(log, method, context)
            try:
                async for item in behavior(request, context):
                    call.sent += _size(item)
                    yield item
            except BaseException as exc:
                call.failed(exc)
                raise
            finally:
                call.write()

        return stream

    async def unary(request: Any, context: Context) -> Any:
        call = _Call(log, method, context)
        try:
            result = behavior(request, context)
            response = await result if inspect.isawaitable(result) else result
            call.sent = _size(response)
            return response
        except BaseException as exc:
            call.failed(exc)
            raise
        finally:
            call.write()

    return unary


class AccessInterceptor(aio.ServerInterceptor):
    """Writes one access-log line per call (see the module docs)."""

    def __init__(self, log: AccessRecorder) -> None:
        self.log = log

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        deserialize = handler.request_deserializer
        serialize = handler.response_serializer
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(
                _logged(handler.stream_stream, self.log, method), deserialize, serialize
            )
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(
                _logged(handler.stream_unary, self.log, method), deserialize, serialize
            )
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(
                _logged(handler.unary_stream, self.log, method), deserialize, serialize
            )
        return grpc.unary_unary_rpc_method_handler(
            _logged(handler.unary_unary, self.log, method), deserialize, serialize
        )
