"""Bearer-token authorization for the gRPC servers (an ``aio`` server interceptor).

With token authorization on, every call carries ``authorization: Bearer <key>`` metadata.
Calls to TorchServe's management service need the management key; every other service on a
server (TorchServe's inference service, the KServe v2 service) needs that server's key kind:
the inference key on the inference server. ``Ping``, the KServe v2 ``ServerLive``,
``ServerReady`` and ``ServerMetadata``, the ``grpc.health.v1`` health service and server
reflection need no key (health checks and tooling carry none, as with REST ``/ping``).

A missing, malformed, wrong or expired key fails the call with ``UNAUTHENTICATED`` (the error
table's code for ``InvalidToken``; TorchServe answers ``PERMISSION_DENIED``) before its
request is read, so a rejected call never reaches the data plane.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

import grpc
from grpc import aio

from torchwick.server.errors import InvalidToken
from torchwick.server.security.tokens import TokenKind

from .status import code_for

MANAGEMENT_SERVICE = "org.pytorch.serve.grpc.management.ManagementAPIsService"
INFERENCE_SERVICE = "org.pytorch.serve.grpc.inference.InferenceAPIsService"
HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICES = (
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)

#: Methods (``/package.Service/Method``) and services that need no key.
OPEN_METHODS = frozenset(
    {
        f"/{INFERENCE_SERVICE}/Ping",
        # The KServe v2 service's server health and metadata (probes carry no key).
        "/inference.GRPCInferenceService/ServerLive",
        "/inference.GRPCInferenceService/ServerReady",
        "/inference.GRPCInferenceService/ServerMetadata",
    }
)
OPEN_SERVICES = frozenset({HEALTH_SERVICE, *REFLECTION_SERVICES})


class TokenChecker(Protocol):
    """Checks a bearer header for a key kind (``TokenAuthority``)."""

    def check(self, kind: TokenKind, header: str | None) -> None:
        """Raise ``InvalidToken`` unless ``header`` carries the current ``kind`` key."""
        ...


Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Any]]


def metadata_value(metadata: Iterable[tuple[str, str | bytes]] | None, name: str) -> str | None:
    """The first text value of ``name`` in call metadata (keys are lower-case in gRPC)."""
    for key, value in metadata or ():
        if key == name and isinstance(value, str):
            return value
    return None


def service_of(method: str) -> str:
    """``package.Service`` of a ``/package.Service/Method`` path."""
    return method.lstrip("/").split("/", 1)[0]


class TokenInterceptor(aio.ServerInterceptor):
    """Rejects calls without the right key (see the module docs).

    ``default_kind`` is the key kind of this server's services other than TorchServe's
    management service (``"inference"`` on the inference server, ``"management"`` on the
    management server).
    """

    def __init__(self, tokens: TokenChecker, default_kind: TokenKind) -> None:
        self.tokens = tokens
        self.default_kind = default_kind

    def kind_for(self, method: str) -> TokenKind | None:
        """The key kind ``method`` needs, or ``None`` when it is open."""
        service = service_of(method)
        if method in OPEN_METHODS or service in OPEN_SERVICES:
            return None
        return "management" if service == MANAGEMENT_SERVICE else self.default_kind

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Any:
        handler = await continuation(handler_call_details)
        kind = self.kind_for(handler_call_details.method)
        if handler is None or kind is None:
            return handler
        header = metadata_value(handler_call_details.invocation_metadata, "authorization")
        try:
            self.tokens.check(kind, header)
        except InvalidToken as error:
            return _rejecting(handler, code_for(error), error.message)
        return handler


def _rejecting(handler: Any, code: grpc.StatusCode, details: str) -> Any:
    """A handler of ``handler``'s shape that fails the call with ``code``."""

    async def reject(request: Any, context: aio.ServicerContext[Any, Any]) -> None:
        await context.abort(code, details)

    serializers = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(reject, **serializers)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(reject, **serializers)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(reject, **serializers)
    return grpc.unary_unary_rpc_method_handler(reject, **serializers)
