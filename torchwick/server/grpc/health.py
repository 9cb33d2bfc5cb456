"""The standard ``grpc.health.v1.Health`` service and server reflection for one gRPC server.

Health: ``Check`` answers ``SERVING`` while ``plane.ready()`` (the same judgement as REST
``/ping``: startup models tried, every default version healthy), else ``NOT_SERVING``, for
the overall service ``""`` and for each service the server hosts; any other name is
``NOT_FOUND`` (the protocol's rule). ``Watch`` sends the status, then each change, judged
every ``watch_interval_s``. Once the server is stopping, every answer is ``NOT_SERVING`` and
a watch ends after saying so (so that it does not hold up the graceful stop).

Reflection (``grpc.reflection.v1alpha``, what grpcurl and most tools use) lists the hosted
services and serves their descriptors. The KServe v2 messages live in the private pool
``grpc_predict_v2_pb2.POOL`` (see ``protos/README.md``); ``ChainedPool`` looks a name up
there and then in protobuf's default pool, so one reflection service covers both.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

import grpc
from google.protobuf import descriptor_pool
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from grpc_reflection.v1alpha import reflection  # type: ignore[import-untyped]

from ._generated import grpc_predict_v2_pb2
from .auth import HEALTH_SERVICE

Context = aio.ServicerContext[Any, Any]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Readiness(Protocol):
    """``DataPlane.ready``."""

    def ready(self) -> bool:
        """Whether the server can serve (``/ping``'s judgement)."""
        ...


class HealthServicer(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    """``Check`` and ``Watch`` over ``plane.ready()`` (see the module docs)."""

    def __init__(
        self, plane: Readiness, services: Sequence[str], *, watch_interval_s: float = 1.0
    ) -> None:
        self.plane = plane
        self.services = frozenset(("", HEALTH_SERVICE, *services))
        self.watch_interval_s = watch_interval_s
        self.stopping = False

    def status(self) -> Any:
        """``SERVING`` or ``NOT_SERVING`` now."""
        return SERVING if not self.stopping and self.plane.ready() else NOT_SERVING

    async def Check(self, request: Any, context: Context) -> Any:  # noqa: N802
        if request.service not in self.services:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service}")
        return health_pb2.HealthCheckResponse(status=self.status())

    async def Watch(self, request: Any, context: Context) -> AsyncIterator[Any]:  # noqa: N802
        if request.service not in self.services:
            yield health_pb2.HealthCheckResponse(
                status=health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
            )
            return
        last = None
        while True:
            current = self.status()
            if current != last:
                yield health_pb2.HealthCheckResponse(status=current)
                last = current
            if self.stopping:
                return  # a watch must not hold up the server's graceful stop
            await asyncio.sleep(self.watch_interval_s)


class ChainedPool:
    """The descriptor-pool lookups reflection uses, tried in each pool in turn."""

    def __init__(self, *pools: Any) -> None:
        self.pools = pools

    def _first(self, method: str, *args: Any) -> Any:
        for pool in self.pools:
            try:
                return getattr(pool, method)(*args)
            except KeyError:
                continue
        raise KeyError(args[0] if args else method)

    def FindFileByName(self, name: str) -> Any:  # noqa: N802 - the DescriptorPool API
        return self._first("FindFileByName", name)

    def FindFileContainingSymbol(self, symbol: str) -> Any:  # noqa: N802
        return self._first("FindFileContainingSymbol", symbol)

    def FindMessageTypeByName(self, name: str) -> Any:  # noqa: N802
        return self._first("FindMessageTypeByName", name)

    def FindExtensionByNumber(self, message: Any, number: int) -> Any:  # noqa: N802
        return message.file.pool.FindExtensionByNumber(message, number)

    def FindAllExtensions(self, message: Any) -> Any:  # noqa: N802
        return message.file.pool.FindAllExtensions(message)


def add_health_and_reflection(
    server: aio.Server, plane: Readiness, services: Sequence[str]
) -> HealthServicer:
    """Add health and reflection for ``services`` (full names) to ``server``."""
    health = HealthServicer(plane, services)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = (*services, HEALTH_SERVICE, reflection.SERVICE_NAME)
    pool = ChainedPool(grpc_predict_v2_pb2.POOL, descriptor_pool.Default())
    reflection.enable_server_reflection(names, server, pool=pool)
    return health
