"""The KServe v2 ``GRPCInferenceService`` (Open Inference Protocol over gRPC).

Served on the gRPC inference port next to TorchServe's ``InferenceAPIsService``. Each RPC is
a thin adapter over ``oip.serving.OipService``, the same core the REST ``/v2`` routes use, so
both transports check, queue, batch, count and fail the same way. ``ServerLive``,
``ServerReady`` and ``ServerMetadata`` need no token (probes carry none); the model RPCs need
the inference key (``auth.py``).

Failure modes: a ``TorchwickError`` ends the call with the one error table's gRPC code and
the error's message as details (``INVALID_ARGUMENT`` for a bad tensor, ``NOT_FOUND`` for an
unknown model, ...). ``ModelReady`` for a known model that has no ready worker answers
``ready: false`` (not an error), as the protocol says.
"""

from __future__ import annotations

import time
from typing import Any

from grpc import aio

from torchwick.server.api.responses import new_request_id
from torchwick.server.errors import TorchwickError
from torchwick.server.oip.serving import OipPlane, OipService

from ._generated import grpc_predict_v2_pb2 as pb
from ._generated import grpc_predict_v2_pb2_grpc as pb_grpc
from .server import GrpcServiceHook
from .status import code_for

Context = aio.ServicerContext[Any, Any]

#: The service's full name (for health and reflection).
OIP_SERVICE = "inference.GRPCInferenceService"
#: Methods that need no token.
OPEN_OIP_METHODS = frozenset(
    f"/{OIP_SERVICE}/{name}" for name in ("ServerLive", "ServerReady", "ServerMetadata")
)


def _metadata(context: Context, *, strip_authorization: bool) -> tuple[tuple[str, str], ...]:
    pairs = []
    for key, value in context.invocation_metadata() or ():
        if not isinstance(value, str):
            continue
        if strip_authorization and key == "authorization":
            continue
        pairs.append((key, value))
    return tuple(pairs)


class OipServicer(pb_grpc.GRPCInferenceServiceServicer):
    """The six RPCs (see the module docs)."""

    def __init__(self, plane: OipPlane, *, strip_authorization: bool) -> None:
        self.service = OipService(plane)
        self.strip_authorization = strip_authorization

    async def ServerLive(  # noqa: N802 - gRPC method names
        self, request: pb.ServerLiveRequest, context: Context
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self.service.live())

    async def ServerReady(  # noqa: N802
        self, request: pb.ServerReadyRequest, context: Context
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.service.ready())

    async def ModelReady(  # noqa: N802
        self, request: pb.ModelReadyRequest, context: Context
    ) -> pb.ModelReadyResponse:
        try:
            ready = self.service.model_ready(request.name, request.version or None)
        except TorchwickError as error:
            await context.abort(code_for(error), error.message)
        return pb.ModelReadyResponse(ready=ready)

    async def ServerMetadata(  # noqa: N802
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        meta = self.service.server_metadata()
        return pb.ServerMetadataResponse(
            name=meta.name, version=meta.version, extensions=list(meta.extensions)
        )

    async def ModelMetadata(  # noqa: N802
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        try:
            meta = self.service.model_metadata(request.name, request.version or None)
        except TorchwickError as error:
            await context.abort(code_for(error), error.message)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta.name,
            versions=list(meta.versions),
            platform=meta.platform,
            inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.inputs],
            outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.outputs],
        )

    async def ModelInfer(  # noqa: N802
        self, request: pb.ModelInferRequest, context: Context
    ) -> pb.ModelInferResponse:
        received = time.perf_counter()
        # The numpy codecs load on the first infer, not at server start.
        from torchwick.server.oip import decode_model_infer_request, encode_model_infer_response

        try:
            decoded = decode_model_infer_request(request)
            response = await self.service.infer(
                request.model_name,
                request.model_version or None,
                decoded,
                request_id=new_request_id(),
                metadata=_metadata(context, strip_authorization=self.strip_authorization),
                received_at=received,
            )
        except TorchwickError as error:
            await context.abort(code_for(error), error.message)
        return encode_model_infer_response(response)


def oip_service_hook(plane: OipPlane, *, strip_authorization: bool) -> GrpcServiceHook:
    """The hook that adds this service to the gRPC inference server."""
    servicer = OipServicer(plane, strip_authorization=strip_authorization)
    return GrpcServiceHook(
        OIP_SERVICE,
        lambda server: pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server),
    )
