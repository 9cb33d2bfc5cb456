"""TorchServe's gRPC management API (``ManagementAPIsService``) over the data plane.

Every method answers a ``ManagementResponse`` whose ``msg`` is what TorchServe 0.12's gRPC
server puts there:

- ``DescribeModel``, ``ListModels``: the REST API's JSON document (``rest_render``), as
  pretty-printed text without the trailing newline;
- ``RegisterModel``, ``ScaleWorker``, ``SetDefault``, ``UnregisterModel``: the status text
  alone (the REST API's ``status`` value, e.g. ``Model "m" unregistered``), for every
  2xx outcome (done, accepted, partial).

Failures are the error table's codes: unknown model or version ``NOT_FOUND``, bad parameters
``INVALID_ARGUMENT``, ``RegisterModel``/``UnregisterModel`` with the model API disabled
``PERMISSION_DENIED`` (as TorchServe), a duplicate registration ``ALREADY_EXISTS``.

Request fields follow TorchServe's proto3 rules (an unset number is 0, an unset string
empty): empty version means the default version (``"all"`` describes every version); in
``RegisterModel`` a number ``<= 0`` or an empty string means "not given", ``synchronous``
is taken as sent (default false); in ``ScaleWorker`` ``min_worker <= 0`` means 1 and
``max_worker <= 0`` means ``min_worker`` (so scaling to zero needs REST, as in TorchServe),
``number_gpu`` and ``timeout`` are not used (TorchServe does not use them either).
``ListModels`` with ``limit`` 0 (unset) returns the REST default page of 100; TorchServe
returns an empty page there, which no client can want.
"""

from __future__ import annotations

import json
from typing import Any

from grpc import aio

from torchwick.server.api.rest_management import (
    LIST_LIMIT_MAX,
    MODEL_API_DISABLED,
    ManagementPlane,
    ModelForgetter,
)
from torchwick.server.api.rest_render import render_page, render_status
from torchwick.server.contracts import ModelStatus, OperationResult
from torchwick.server.errors import BadRequest, MethodNotAllowed, TorchwickError
from torchwick.server.registry import RegisterRequest

from ._generated import management_pb2, management_pb2_grpc
from .status import code_for

Context = aio.ServicerContext[Any, Any]
Response = management_pb2.ManagementResponse


def json_text(value: Any) -> str:
    """JSON as the REST API writes it (2-space indent, no ASCII escaping), no newline."""
    return json.dumps(value, indent=2, ensure_ascii=False)


def _given(value: int) -> int | None:
    return value if value > 0 else None


class ManagementServicer(management_pb2_grpc.ManagementAPIsServiceServicer):
    """The six management RPCs (see the module docs). ``metrics`` forgets an unregistered
    model's series, as the REST API does."""

    def __init__(
        self, plane: ManagementPlane, metrics: ModelForgetter | None, *, enable_model_api: bool
    ) -> None:
        self.plane = plane
        self.metrics = metrics
        self.enable_model_api = enable_model_api

    async def DescribeModel(  # noqa: N802 - gRPC method names
        self, request: management_pb2.DescribeModelRequest, context: Context
    ) -> Response:
        try:
            statuses = await self._describe(request)
        except TorchwickError as error:
            await context.abort(code_for(error), error.message)
        return Response(msg=json_text([render_status(s) for s in statuses]))

    async def _describe(self, request: management_pb2.DescribeModelRequest) -> list[ModelStatus]:
        version = request.model_version or None
        if version == "all":
            return self.plane.describe(request.model_name, None, all_versions=True)
        if request.customized:
            return await self.plane.describe_customized(request.model_name, version)
        return self.plane.describe(request.model_name, version)

    async def ListModels(  # noqa: N802
        self, request: management_pb2.ListModelsRequest, context: Context
    ) -> Response:
        limit = request.limit if request.limit != 0 else LIST_LIMIT_MAX
        page = self.plane.list_models(limit, request.next_page_token)
        return Response(msg=json_text(render_page(page)))

    async def RegisterModel(  # noqa: N802
        self, request: management_pb2.RegisterModelRequest, context: Context
    ) -> Response:
        try:
            if not self.enable_model_api:
                raise MethodNotAllowed(MODEL_API_DISABLED)
            if not request.url:
                raise BadRequest("Parameter url is required.")
            result = await self.plane.register(
                RegisterRequest(
                    url=request.url,
                    model_name=request.model_name or None,
                    handler=request.handler or None,
                    runtime=request.runtime or None,
                    batch_size=_given(request.batch_size),
                    max_batch_delay=_given(request.max_batch_delay),
                    initial_workers=_given(request.initial_workers),
                    synchronous=request.synchronous,
                    response_timeout=_given(request.response_timeout),
                    startup_timeout=_given(request.startup_timeout),
                )
            )
        except TorchwickError as error:
            await context.abort(code_for(error), error.message)
        return _message(result)

    async def ScaleWorker(  # noqa: N802
        self, request: management_pb2.ScaleWorkerRequest, context: Context
    ) -> Response:
        min_worker = request.min_worker if request.min_worker > 0 else 1
        max_worker = request.max_worker if request.max_worker > 0 else min_worker
        try:
            result = await self.plane.scale(
                request.model_name,
                request.model_version or None,
                min_worker,
                max_worker,
                request.synchronous,
            )
        except TorchwickError as error:
            await context.abort(code_for(error), error.message)
        return _message(result)

    async def SetDefault(  # noqa: N802
        self, request: management_pb2.SetDefaultRequest, context: Context
    ) -> Response:
        try:
            result = self.plane.set_default(request.model_name, request.model_version)
        except TorchwickError as error:
            await context.abort(code_for(error), error.message)
        return _message(result)

    async def UnregisterModel(  # noqa: N802
        self, request: management_pb2.UnregisterModelRequest, context: Context
    ) -> Response:
        version = request.model_version or None
        try:
            if not self.enable_model_api:
                raise MethodNotAllowed(MODEL_API_DISABLED)
            if not request.model_name:
                raise BadRequest("Parameter model_name is required.")
            result = await self.plane.unregister(request.model_name, version)
        except TorchwickError as error:
            await context.abort(code_for(error), error.message)
        if self.metrics is not None:
            self.metrics.forget_model(request.model_name, version)
        return _message(result)


def _message(result: OperationResult) -> Response:
    return Response(msg=result.message)
