"""Build, start and stop torchwick's two gRPC servers (``grpc.aio``, on the running loop).

``start_grpc_servers`` binds TorchServe's inference API on
``grpc_inference_address:grpc_inference_port`` and its management API on
``grpc_management_address:grpc_management_port`` (port 0: a free port, reported back). Each
server also hosts ``grpc.health.v1`` health and server reflection; the inference server
hosts the ``extra_inference_services`` hooks too (the KServe v2 ``GRPCInferenceService``).

Settings applied to both servers:

- ``max_request_size`` / ``max_response_size``: ``grpc.max_receive_message_length`` /
  ``grpc.max_send_message_length`` (a larger message fails with ``RESOURCE_EXHAUSTED``);
- ``grpc_{inference,management}_max_connection_age_ms`` and ``..._grace_ms``:
  ``grpc.max_connection_age_ms`` / ``grpc.max_connection_age_grace_ms`` (unset: unlimited);
- ``grpc_max_concurrent_streams``: ``grpc.max_concurrent_streams`` (streams per HTTP/2
  connection); ``grpc_max_connection_idle_s``: ``grpc.max_connection_idle_ms`` (an idle
  connection is closed with GOAWAY); ``grpc_max_metadata_size``: ``grpc.max_metadata_size``
  (a call with more metadata is refused); ``grpc_max_concurrent_rpcs``: the server's
  ``maximum_concurrent_rpcs`` (a call past it fails with ``RESOURCE_EXHAUSTED`` at once);
- ``enable_grpc_ssl``: TLS with the HTTPS keys (``keystore``, else ``private_key_file`` and
  ``certificate_file``);
- token authorization (``TokenInterceptor``) unless ``disable_token_authorization``;
- every call written to the access log (``AccessInterceptor``, outermost);
- malformed request messages answer ``INVALID_ARGUMENT`` (``DecodeGuard``).

``SO_REUSEPORT`` is off, so a port that is already taken fails the start with
``GrpcBindError`` instead of silently sharing it with another process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from grpc import aio

from torchwick.server.api.rest_management import ManagementPlane, ModelForgetter
from torchwick.server.observability.access_log import AccessRecorder
from torchwick.server.security.tls import load_tls_material
from torchwick.server.security.tokens import TokenKind
from torchwick.server.settings import Settings

from ._generated import inference_pb2_grpc, management_pb2_grpc
from .access import AccessInterceptor
from .auth import INFERENCE_SERVICE, MANAGEMENT_SERVICE, TokenChecker, TokenInterceptor
from .decode import DecodeGuard
from .health import HealthServicer, add_health_and_reflection
from .inference import GrpcInferencePlane, InferenceServicer
from .management import ManagementServicer

log = logging.getLogger("torchwick.server.grpc")


class GrpcBindError(OSError):
    """A gRPC server could not bind its address (taken, or not an address of this host)."""


@dataclass(frozen=True)
class GrpcServiceHook:
    """A service to add to a gRPC server: its full name (for health and reflection) and the
    function that adds its servicer (e.g. a generated ``add_..._to_server`` bound to one
    servicer)."""

    name: str
    add: Callable[[aio.Server], None]


class GrpcPlane(GrpcInferencePlane, ManagementPlane, Protocol):
    """What the gRPC servicers use of the data plane (``DataPlane``)."""


@dataclass
class GrpcServer:
    """One started gRPC server: its API name, the address it reports and its health."""

    api: str
    server: aio.Server
    bound: str
    health: HealthServicer


@dataclass
class GrpcServers:
    """The started servers; ``stop`` ends them."""

    servers: list[GrpcServer] = field(default_factory=list)
    _forcing: set[asyncio.Task[None]] = field(default_factory=set)

    async def stop(self, grace_s: float | None) -> None:
        """Report NOT_SERVING, refuse new calls, let in-flight calls run for ``grace_s``
        seconds (``None``: until they end), then cancel the rest."""
        for running in self.servers:
            running.health.stopping = True
        for running in self.servers:
            await running.server.stop(grace_s)

    def force(self) -> None:
        """Cancel in-flight calls now (a second stop signal); returns at once."""
        for running in self.servers:
            running.health.stopping = True
            # aio's stop is a coroutine; a second stop with no grace cancels what still runs.
            task = asyncio.ensure_future(running.server.stop(0))
            self._forcing.add(task)
            task.add_done_callback(self._forcing.discard)


def server_options(settings: Settings, api: str) -> list[tuple[str, Any]]:
    """The channel options of ``api``'s server (see the module docs)."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", settings.max_request_size),
        ("grpc.max_send_message_length", settings.max_response_size),
        ("grpc.so_reuseport", 0),
        ("grpc.max_concurrent_streams", settings.grpc_max_concurrent_streams),
        ("grpc.max_connection_idle_ms", int(settings.grpc_max_connection_idle_s * 1000)),
        # The soft limit refuses at random between it and the hard one: make both the same.
        ("grpc.max_metadata_size", settings.grpc_max_metadata_size),
        ("grpc.absolute_max_metadata_size", settings.grpc_max_metadata_size),
    ]
    age = getattr(settings, f"grpc_{api}_max_connection_age_ms")
    grace = getattr(settings, f"grpc_{api}_max_connection_age_grace_ms")
    if age is not None:
        options.append(("grpc.max_connection_age_ms", age))
    if grace is not None:
        options.append(("grpc.max_connection_age_grace_ms", grace))
    return options


def bind_target(host: str, port: int) -> str:
    """``host:port`` for gRPC (IPv6 literals in brackets)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def _credentials(settings: Settings) -> grpc.ServerCredentials | None:
    if not settings.enable_grpc_ssl:
        return None
    # The config loader checked at start that the keystore or PEM files load.
    material = load_tls_material(settings)
    assert material is not None
    return grpc.ssl_server_credentials([(material.key_pem, material.cert_pem)])


def _bind(server: aio.Server, host: str, port: int, credentials: Any) -> int:
    target = bind_target(host, port)
    try:
        if credentials is None:
            bound = server.add_insecure_port(target)
        else:
            bound = server.add_secure_port(target, credentials)
    except RuntimeError as exc:  # grpc raises RuntimeError("Failed to bind to address ...")
        raise GrpcBindError(f"gRPC cannot bind {target}: {exc}") from None
    if bound == 0:
        raise GrpcBindError(f"gRPC cannot bind {target}")
    return bound


async def start_grpc_servers(
    settings: Settings,
    plane: GrpcPlane,
    tokens: TokenChecker | None,
    *,
    metrics: ModelForgetter | None = None,
    extra_inference_services: Sequence[GrpcServiceHook] = (),
    access_log: AccessRecorder | None = None,
) -> GrpcServers:
    """Bind and start both servers (see the module docs); on a failure, stop what started
    and raise ``GrpcBindError`` (or ``OSError`` for an unreadable TLS file)."""
    credentials = _credentials(settings)
    inference = [
        GrpcServiceHook(
            INFERENCE_SERVICE,
            lambda server: inference_pb2_grpc.add_InferenceAPIsServiceServicer_to_server(
                InferenceServicer(plane, strip_authorization=tokens is not None), server
            ),
        ),
        *extra_inference_services,
    ]
    management = [
        GrpcServiceHook(
            MANAGEMENT_SERVICE,
            lambda server: management_pb2_grpc.add_ManagementAPIsServiceServicer_to_server(
                ManagementServicer(plane, metrics, enable_model_api=settings.enable_model_api),
                server,
            ),
        )
    ]
    plans: list[tuple[str, TokenKind, str, int, list[GrpcServiceHook]]] = [
        (
            "inference",
            "inference",
            settings.grpc_inference_address,
            settings.grpc_inference_port,
            inference,
        ),
        (
            "management",
            "management",
            settings.grpc_management_address,
            settings.grpc_management_port,
            management,
        ),
    ]
    started = GrpcServers()
    try:
        for api, kind, host, port, hooks in plans:
            interceptors: list[aio.ServerInterceptor] = [DecodeGuard()]
            if tokens is not None:
                # First, so that a call without the key is refused before its request is read.
                interceptors.insert(0, TokenInterceptor(tokens, kind))
            if access_log is not None:
                # Outermost, so that refused calls are logged too.
                interceptors.insert(0, AccessInterceptor(access_log))
            server = aio.server(
                interceptors=interceptors,
                options=server_options(settings, api),
                maximum_concurrent_rpcs=settings.grpc_max_concurrent_rpcs,
            )
            for hook in hooks:
                hook.add(server)
            health = add_health_and_reflection(server, plane, [hook.name for hook in hooks])
            bound_port = _bind(server, host, port, credentials)
            await server.start()
            scheme = "grpcs" if credentials is not None else "grpc"
            started.servers.append(
                GrpcServer(api, server, f"{scheme}://{bind_target(host, bound_port)}", health)
            )
    except BaseException:
        await started.stop(0)
        raise
    return started
