"""The REST management API on FastAPI: list, register, describe, scale, set-default,
unregister, KServe v1 readiness and token rotation.

Routes and codes are TorchServe's (see ``docs/api.md``). Secure defaults: ``POST /models``
and ``DELETE /models/...`` answer 405 unless ``enable_model_api`` is on; every route needs the
management token (``GET /token`` needs the API key) when token authorization is on. Outcomes
come from the data plane as ``OperationResult``s and are sent as ``{"status": "..."}`` with
TorchServe's 200/202/206; failures are ``TorchwickError``s answered by the app's handlers.

Query parameters are declared with their types, so FastAPI validates them and documents them;
a value that does not parse is TorchServe's 400 JSON naming the parameter (``errors_http``).
A parameter given with an empty value (``?limit=&next_page_token=``) means "not given", as in
TorchServe (``LenientQueryRoute`` drops it before validation).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Protocol
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute

from torchwick.server.contracts import ModelPage, ModelStatus, OperationResult
from torchwick.server.dataplane import RegisterRequest
from torchwick.server.errors import BadRequest, MethodNotAllowed

from .api_docs import ApiDocuments
from .inputs import mime_type
from .management_params import RegisterParams, parse_json_object, parse_params
from .responses import JSON_CONTENT_TYPE, NOT_ALLOWED_MESSAGE, json_bytes, read_body
from .rest_render import OUTCOME_STATUS, render_page, render_status
from .tokens_port import TokenChecker, TokenRotator

MODEL_API_DISABLED = (
    f"{NOT_ALLOWED_MESSAGE} The model API is disabled; enable it with enable_model_api=true "
    "or --enable-model-api."
)
LIST_LIMIT_MAX = 100

Customized = Annotated[bool, Query(description="Add the handler's metadata.")]
MinWorker = Annotated[int, Query(description="Minimum workers.")]
MaxWorker = Annotated[int | None, Query(description="Maximum workers (default min_worker).")]
ScaleSynchronous = Annotated[bool, Query(description="Wait for the workers.")]
Force = Annotated[bool, Query(description="Remove even a version a traffic policy uses.")]


class ManagementPlane(Protocol):
    """The part of the data plane the management routes use."""

    async def register(self, req: RegisterRequest) -> OperationResult: ...
    async def scale(
        self,
        model: str,
        version: str | None,
        min_worker: int,
        max_worker: int | None,
        synchronous: bool,
    ) -> OperationResult: ...
    def describe(
        self, model: str, version: str | None, *, all_versions: bool = False
    ) -> list[ModelStatus]: ...
    async def describe_customized(self, model: str, version: str | None) -> list[ModelStatus]: ...
    def list_models(self, limit: int, offset: int) -> ModelPage: ...
    async def unregister(
        self, model: str, version: str | None, *, force: bool = False
    ) -> OperationResult: ...
    def set_default(self, model: str, version: str) -> OperationResult: ...
    def model_ready(self, model: str, version: str | None = None) -> bool: ...


class ModelForgetter(Protocol):
    """Drops an unregistered model's metric series (``FrontendMetrics.forget_model``)."""

    def forget_model(self, model: str, version: str | None = None) -> None: ...


class TokenAuthorityLike(TokenChecker, TokenRotator, Protocol):
    """Checks and rotates tokens (``TokenAuthority``)."""


def json_response(status: int, value: Any) -> Response:
    """Frontend JSON as TorchServe writes it (pretty, newline-terminated)."""
    return Response(json_bytes(value), status, media_type=JSON_CONTENT_TYPE.decode())


def _status(result: OperationResult) -> Response:
    return json_response(OUTCOME_STATUS[result.outcome], {"status": result.message})


def _authorization(request: Request) -> str | None:
    return request.headers.get("authorization")


def drop_empty_query_values(query: bytes) -> bytes:
    """``query`` without the parameters whose value is empty (``limit=``, a bare ``limit``)."""
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True, encoding="latin-1")
    return urlencode([(k, v) for k, v in pairs if v.strip()], encoding="latin-1").encode("latin-1")


class LenientQueryRoute(APIRoute):
    """A route on which an empty query value means the parameter was not given."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def lenient(request: Request) -> Response:
            query = request.scope.get("query_string", b"")
            if query:
                request.scope["query_string"] = drop_empty_query_values(query)
            return await handler(request)

        return lenient


def management_router(
    plane: ManagementPlane,
    metrics: ModelForgetter,
    tokens: TokenAuthorityLike | None,
    *,
    enable_model_api: bool,
    max_request_size: int,
    docs: ApiDocuments,
) -> APIRouter:
    """The management routes (see the module docs)."""
    guarded: list[Any] = []
    if tokens is not None:

        def require_management(request: Request) -> None:
            tokens.check("management", _authorization(request))

        guarded = [Depends(require_management)]
    router = APIRouter(dependencies=guarded, route_class=LenientQueryRoute)

    @router.get("/models", operation_id="listModels", summary="List models.")
    async def list_models(
        limit: Annotated[int, Query(description="Page size (0-100).")] = LIST_LIMIT_MAX,
        next_page_token: Annotated[int, Query(description="Offset of the page.")] = 0,
    ) -> Response:
        return json_response(200, render_page(plane.list_models(limit, next_page_token)))

    @router.post(
        "/models",
        operation_id="registerModel",
        summary="Register a model (405 unless enable_model_api).",
        openapi_extra={"parameters": _register_parameters()},
    )
    async def register(request: Request) -> Response:
        if not enable_model_api:
            raise MethodNotAllowed(MODEL_API_DISABLED)
        values: dict[str, Any] = dict(request.query_params)
        if mime_type(request.headers.get("content-type", "").encode("latin-1")) == (
            "application/json"
        ):
            body = await read_body(request.scope, request.receive, max_request_size)
            if body.strip():
                values.update(parse_json_object(body))
        params = parse_params(RegisterParams, values)
        if not params.url:
            raise BadRequest("Parameter url is required.")
        result = await plane.register(
            RegisterRequest(
                url=params.url,
                model_name=params.model_name,
                handler=params.handler,
                runtime=params.runtime,
                batch_size=params.batch_size,
                max_batch_delay=params.max_batch_delay,
                initial_workers=params.initial_workers,
                synchronous=params.synchronous,
                response_timeout=params.response_timeout,
                startup_timeout=params.startup_timeout,
            )
        )
        return _status(result)

    async def describe(model: str, version: str | None, customized: bool) -> Response:
        if version == "all":
            statuses = plane.describe(model, None, all_versions=True)
        elif customized:
            statuses = await plane.describe_customized(model, version)
        else:
            statuses = plane.describe(model, version)
        return json_response(200, [render_status(s) for s in statuses])

    async def unregister(model: str, version: str | None, force: bool) -> Response:
        if not enable_model_api:
            raise MethodNotAllowed(MODEL_API_DISABLED)
        result = await plane.unregister(model, version, force=force)
        metrics.forget_model(model, version)
        return _status(result)

    async def model_api(model: str, version: str | None) -> Response:
        plane.describe(model, None if version == "all" else version)  # 404s if unknown
        return json_response(200, docs.model_document("/models/{model_name}", model))

    unversioned = "/models/{model_name}"
    versioned = "/models/{model_name}/{model_version}"

    @router.get(unversioned, operation_id="describeModel1", summary="Describe.")
    async def describe_default(model_name: str, customized: Customized = False) -> Response:
        return await describe(model_name, None, customized)

    @router.get(
        versioned, operation_id="describeModel2", summary="Describe ('all': every version)."
    )
    async def describe_version(
        model_name: str, model_version: str, customized: Customized = False
    ) -> Response:
        return await describe(model_name, model_version, customized)

    @router.put(unversioned, operation_id="scaleModel1", summary="Scale workers.")
    async def scale_default(
        model_name: str,
        min_worker: MinWorker = 1,
        max_worker: MaxWorker = None,
        synchronous: ScaleSynchronous = False,
        model_version: Annotated[str | None, Query(description="Version to scale.")] = None,
    ) -> Response:
        result = await plane.scale(model_name, model_version, min_worker, max_worker, synchronous)
        return _status(result)

    @router.put(versioned, operation_id="scaleModel2", summary="Scale workers.")
    async def scale_version(
        model_name: str,
        model_version: str,
        min_worker: MinWorker = 1,
        max_worker: MaxWorker = None,
        synchronous: ScaleSynchronous = False,
    ) -> Response:
        result = await plane.scale(model_name, model_version, min_worker, max_worker, synchronous)
        return _status(result)

    unregister_summary = (
        "Unregister (405 unless enable_model_api; 403 for the default version while others exist)."
    )

    @router.delete(unversioned, operation_id="unregisterModel1", summary=unregister_summary)
    async def unregister_default(model_name: str, force: Force = False) -> Response:
        return await unregister(model_name, None, force)

    @router.delete(versioned, operation_id="unregisterModel2", summary=unregister_summary)
    async def unregister_version(
        model_name: str, model_version: str, force: Force = False
    ) -> Response:
        return await unregister(model_name, model_version, force)

    @router.options(unversioned, include_in_schema=False)
    async def model_api_default(model_name: str) -> Response:
        return await model_api(model_name, None)

    @router.options(versioned, include_in_schema=False)
    async def model_api_version(model_name: str, model_version: str) -> Response:
        return await model_api(model_name, model_version)

    @router.put(
        "/models/{model_name}/{model_version}/set-default",
        operation_id="setDefault",
        summary="Make this version the default.",
    )
    async def set_default(model_name: str, model_version: str) -> Response:
        return _status(plane.set_default(model_name, model_version))

    @router.get(
        "/v1/models/{model_name}", operation_id="modelReady", summary="KServe v1 readiness."
    )
    async def ready(model_name: str) -> Response:
        return json_response(200, {"name": model_name, "ready": plane.model_ready(model_name)})

    return router


def token_router(tokens: TokenAuthorityLike) -> APIRouter:
    """``GET /token`` (only with token authorization on: otherwise there are no keys)."""

    def require_api_key(request: Request) -> None:
        tokens.check_api_key(_authorization(request))

    router = APIRouter(dependencies=[Depends(require_api_key)], route_class=LenientQueryRoute)

    @router.get(
        "/token",
        operation_id="rotateToken",
        summary="Replace the inference or management key (needs the API key).",
    )
    async def rotate(
        type: Annotated[str | None, Query(description="inference or management")] = None,
    ) -> Response:
        if type is None:
            raise BadRequest("Parameter type is required: inference or management.")
        tokens.rotate(type)
        # TorchServe answers an empty JSON document: just the newline.
        return Response(b"\n", 200, media_type=JSON_CONTENT_TYPE.decode())

    return router


def _register_parameters() -> list[dict[str, Any]]:
    """The documented query parameters of ``POST /models`` (also accepted as a JSON body)."""
    fields = (
        ("url", "string", "Archive name in the model store, or an allowed URL.", True),
        ("model_name", "string", "Overrides the manifest's model name.", False),
        ("handler", "string", "Overrides the manifest's handler.", False),
        ("runtime", "string", "Runtime (python).", False),
        ("batch_size", "integer", "Inference batch size.", False),
        ("max_batch_delay", "integer", "Max batch wait in ms.", False),
        ("initial_workers", "integer", "Workers to start.", False),
        ("synchronous", "boolean", "Wait for the workers.", False),
        ("response_timeout", "integer", "Seconds a worker may take.", False),
        ("startup_timeout", "integer", "Seconds a worker may take to load.", False),
    )
    return [
        {"name": n, "in": "query", "required": r, "description": d, "schema": {"type": t}}
        for n, t, d, r in fields
    ]
