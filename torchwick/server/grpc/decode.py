"""Malformed request messages answer ``INVALID_ARGUMENT`` (an ``aio`` server interceptor).

``grpc.aio`` turns a request that its deserializer cannot parse into ``UNKNOWN`` ("Unexpected
DecodeError"), which tells a client nothing. ``DecodeGuard`` gives every method handler a
pass-through deserializer and parses the bytes itself, failing the call with
``INVALID_ARGUMENT`` and the protobuf message's name when they do not parse; the server and
other calls are unaffected. On request streams, each message is parsed as it is read, and the
first malformed one ends the call.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc import aio

Context = aio.ServicerContext[Any, Any]
Deserializer = Callable[[bytes], Any]


async def _decode(deserialize: Deserializer, raw: bytes, context: Context) -> Any:
    try:
        return deserialize(raw)
    except (DecodeError, ValueError) as exc:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed request message: {exc}")


async def _decoded(
    deserialize: Deserializer, raw_messages: AsyncIterator[bytes], context: Context
) -> AsyncIterator[Any]:
    async for raw in raw_messages:
        yield await _decode(deserialize, raw, context)


async def _outcome(result: Any) -> Any:
    return await result if inspect.isawaitable(result) else result


def _wrap(behavior: Any, deserialize: Deserializer, *, streaming_in: bool) -> Any:
    async def arguments(raw: Any, context: Context) -> Any:
        if streaming_in:
            return _decoded(deserialize, raw, context)
        return await _decode(deserialize, raw, context)

    if inspect.isasyncgenfunction(behavior):

        async def stream(raw: Any, context: Context) -> AsyncIterator[Any]:
            async for item in behavior(await arguments(raw, context), context):
                yield item

        return stream

    async def call(raw: Any, context: Context) -> Any:
        return await _outcome(behavior(await arguments(raw, context), context))

    return call


def guard(handler: Any) -> Any:
    """``handler`` with its deserializer moved inside the call (see the module docs)."""
    deserialize = handler.request_deserializer
    if deserialize is None:
        return handler
    serializer = handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        behavior = _wrap(handler.stream_stream, deserialize, streaming_in=True)
        return grpc.stream_stream_rpc_method_handler(behavior, response_serializer=serializer)
    if handler.request_streaming:
        behavior = _wrap(handler.stream_unary, deserialize, streaming_in=True)
        return grpc.stream_unary_rpc_method_handler(behavior, response_serializer=serializer)
    if handler.response_streaming:
        behavior = _wrap(handler.unary_stream, deserialize, streaming_in=False)
        return grpc.unary_stream_rpc_method_handler(behavior, response_serializer=serializer)
    behavior = _wrap(handler.unary_unary, deserialize, streaming_in=False)
    return grpc.unary_unary_rpc_method_handler(behavior, response_serializer=serializer)


class DecodeGuard(aio.ServerInterceptor):
    """Applies ``guard`` to every handler of the server. Handlers are built once per method
    and cached, so a call pays one dictionary lookup."""

    def __init__(self) -> None:
        self._guarded: dict[int, Any] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        guarded = self._guarded.get(id(handler))
        if guarded is None or guarded[0] is not handler:
            guarded = (handler, guard(handler))
            self._guarded[id(handler)] = guarded
        return guarded[1]
