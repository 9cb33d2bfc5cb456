"""The Open Inference Protocol (KServe v2) over REST, on the inference listener.

Routes (the protocol's): ``GET /v2``, ``GET /v2/health/live``, ``GET /v2/health/ready``,
``GET /v2/models/{m}[/versions/{v}]``, ``GET .../ready`` and ``POST .../infer`` with the JSON
tensor format and the binary tensor data extension (``Inference-Header-Content-Length``), as
``tritonclient.http`` and KServe's clients speak them. Health answers need no token (probes
carry none); model metadata, readiness and inference need the inference token, like
``/predictions``.

``infer`` is a raw ASGI endpoint for the same reason as ``/predictions`` (it is a hot path);
the rest are FastAPI routes. Errors use the protocol's body, ``{"error": message}``, which
tritonclient reads, plus torchwick's ``code`` and ``type``; the status comes from the one
error table. A health or readiness answer of "no" is a 400 with the same body shape as "yes"
(the protocol signals the boolean by the status code).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.routing import BaseRoute, Route

from torchwick.server.contracts import ModelMetadata
from torchwick.server.errors import MethodNotAllowed, TorchwickError
from torchwick.server.oip.serving import OipPlane, OipService

from .disconnect import DisconnectMonitor
from .responses import (
    CLIENT_GONE_KEY,
    NOT_ALLOWED_MESSAGE,
    REQUEST_ID_KEY,
    STARTED_KEY,
    ClientDisconnected,
    Receive,
    Scope,
    Send,
    error_headers,
    header,
    json_bytes,
    read_body,
    send_response,
)
from .tokens_port import TokenChecker

_JSON = "application/json"


def oip_error_body(error: TorchwickError) -> bytes:
    """The protocol's error body for ``error`` (with torchwick's code and type)."""
    status = error.status
    return json_bytes(
        {"error": error.message, "code": status.http_status, "type": status.type_name}
    )


def oip_error(error: TorchwickError) -> Response:
    """The protocol's error answer for ``error``, status from the one error table."""
    return Response(oip_error_body(error), error.status.http_status, media_type=_JSON)


def _json(status: int, value: Any) -> Response:
    return Response(json_bytes(value), status, media_type=_JSON)


def metadata_document(meta: ModelMetadata) -> dict[str, Any]:
    """``GET /v2/models/{m}``'s body."""

    def tensors(specs: Any) -> list[dict[str, Any]]:
        return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in specs]

    return {
        "name": meta.name,
        "versions": list(meta.versions),
        "platform": meta.platform,
        "inputs": tensors(meta.inputs),
        "outputs": tensors(meta.outputs),
    }


class OipRestApi:
    """The OIP REST routes over one data plane."""

    def __init__(
        self, plane: OipPlane, tokens: TokenChecker | None, *, max_request_size: int
    ) -> None:
        self.service = OipService(plane)
        self.tokens = tokens
        self.max_request_size = max_request_size
        self.disconnects = DisconnectMonitor()

    def _check(self, authorization: str | None) -> None:
        if self.tokens is not None:
            self.tokens.check("inference", authorization)

    def raw_routes(self) -> list[BaseRoute]:
        """The infer routes (raw ASGI, on the hot-path router; any method but POST is a 405
        answered by the endpoint in the protocol's error body)."""
        endpoint = _Infer(self)
        return [
            Route("/v2/models/{model_name}/infer", endpoint),
            Route("/v2/models/{model_name}/versions/{model_version}/infer", endpoint),
        ]

    def router(self) -> APIRouter:
        """Health, server and model metadata, readiness."""
        router = APIRouter()
        service = self.service

        def authorized(request: Request) -> None:
            self._check(request.headers.get("authorization"))

        guarded = [Depends(authorized)]

        @router.get("/v2", operation_id="oipServerMetadata", summary="OIP server metadata.")
        async def server_metadata() -> Response:
            meta = service.server_metadata()
            return _json(
                200,
                {"name": meta.name, "version": meta.version, "extensions": list(meta.extensions)},
            )

        @router.get("/v2/health/live", operation_id="oipLive", summary="OIP liveness.")
        async def live() -> Response:
            return _json(200, {"live": service.live()})

        @router.get("/v2/health/ready", operation_id="oipReady", summary="OIP readiness.")
        async def ready() -> Response:
            ok = service.ready()
            return _json(200 if ok else 400, {"ready": ok})

        async def model_metadata(model: str, version: str | None) -> Response:
            try:
                return _json(200, metadata_document(service.model_metadata(model, version)))
            except TorchwickError as error:
                return oip_error(error)

        async def model_ready(model: str, version: str | None) -> Response:
            try:
                ok = service.model_ready(model, version)
            except TorchwickError as error:
                return oip_error(error)
            return _json(200 if ok else 400, {"name": model, "ready": ok})

        @router.get(
            "/v2/models/{model_name}", dependencies=guarded, operation_id="oipModelMetadata"
        )
        async def metadata_default(model_name: str) -> Response:
            return await model_metadata(model_name, None)

        @router.get(
            "/v2/models/{model_name}/versions/{model_version}",
            dependencies=guarded,
            operation_id="oipModelVersionMetadata",
        )
        async def metadata_version(model_name: str, model_version: str) -> Response:
            return await model_metadata(model_name, model_version)

        @router.get(
            "/v2/models/{model_name}/ready", dependencies=guarded, operation_id="oipModelReady"
        )
        async def ready_default(model_name: str) -> Response:
            return await model_ready(model_name, None)

        @router.get(
            "/v2/models/{model_name}/versions/{model_version}/ready",
            dependencies=guarded,
            operation_id="oipModelVersionReady",
        )
        async def ready_version(model_name: str, model_version: str) -> Response:
            return await model_ready(model_name, model_version)

        return router

    @staticmethod
    def paths() -> dict[str, Any]:
        """The OpenAPI paths of the raw infer routes."""
        operation = {
            "summary": "OIP inference: JSON tensors, or JSON header + binary tensor data "
            "(Inference-Header-Content-Length).",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {}},
                    "application/octet-stream": {"schema": {}},
                },
            },
            "responses": {
                "200": {"description": "The outputs."},
                "400": {"description": "Malformed request or tensor."},
                "401": {"description": "Missing or wrong inference token."},
                "404": {"description": "Model or version not found."},
            },
        }
        model = {"name": "model_name", "in": "path", "required": True, "schema": {"type": "string"}}
        version = {**model, "name": "model_version"}
        return {
            "/v2/models/{model_name}/infer": {
                "post": {**operation, "operationId": "oipInfer", "parameters": [model]}
            },
            "/v2/models/{model_name}/versions/{model_version}/infer": {
                "post": {
                    **operation,
                    "operationId": "oipInferVersion",
                    "parameters": [model, version],
                }
            },
        }


class _Infer:
    """``POST /v2/models/{m}[/versions/{v}]/infer``."""

    def __init__(self, api: OipRestApi) -> None:
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The numpy codecs load on the first infer, not at server start.
        from torchwick.server.oip import (
            decode_infer_request,
            encode_infer_response,
            parse_header_length,
        )

        api = self.api
        params: dict[str, str] = scope["path_params"]
        try:
            if scope["method"] != "POST":
                raise MethodNotAllowed(NOT_ALLOWED_MESSAGE)
            raw = header(scope, b"authorization")
            api._check(None if raw is None else raw.decode("latin-1"))
            try:
                body = await read_body(scope, receive, api.max_request_size)
            except ClientDisconnected:
                scope[CLIENT_GONE_KEY] = True
                return
            length_header = header(scope, b"inference-header-content-length")
            length = parse_header_length(
                None if length_header is None else length_header.decode("latin-1"), len(body)
            )
            request = decode_infer_request(body, length)
            watch = api.disconnects.watch(receive)
            try:
                response = await api.service.infer(
                    params["model_name"],
                    params.get("model_version"),
                    request,
                    request_id=scope[REQUEST_ID_KEY],
                    received_at=scope[STARTED_KEY],
                )
            except asyncio.CancelledError:
                if not watch.absorb_cancellation():
                    raise
                scope[CLIENT_GONE_KEY] = True
                return
            finally:
                watch.stop()
            encoded = encode_infer_response(response, request)
        except TorchwickError as error:
            await send_response(
                send,
                error.status.http_status,
                oip_error_body(error),
                _JSON.encode(),
                error_headers(error),
            )
            return
        extra = []
        if encoded.header_length is not None:
            extra.append((b"inference-header-content-length", str(encoded.header_length).encode()))
        await send_response(send, 200, encoded.body, encoded.content_type.encode(), extra)
