"""The REST management API: list, register, describe, scale, set-default, unregister, tokens.

Routes and codes are TorchServe's (see ``docs/api.md``). Secure defaults: ``POST /models``
and ``DELETE /models/...`` answer 405 unless ``enable_model_api`` is on; every route but the
API description needs the management token (``GET /token`` needs the API key) when token
authorization is on. Operation outcomes come from the data plane's ``ManagementResult`` and
are sent as ``{"status": "..."}``; failures are ``TorchwickError``s answered by the listener.
"""

from __future__ import annotations

from typing import Any

from torchwick.server.dataplane import RegisterRequest
from torchwick.server.errors import BadRequest, MethodNotAllowed
from torchwick.server.observability.metrics import FrontendMetrics

from .asgi import JSON_CONTENT_TYPE, Request
from .inputs import mime_type
from .management_params import (
    DescribeParams,
    ListParams,
    RegisterParams,
    ScaleParams,
    TokenParams,
    parse_json_object,
    parse_params,
)
from .openapi import describe_model
from .ports import ManagementPlane
from .router import NOT_ALLOWED_MESSAGE, Operation, Parameter, Route
from .tokens_port import TokenRotator

MODEL_API_DISABLED = (
    f"{NOT_ALLOWED_MESSAGE} The model API is disabled; enable it with enable_model_api=true "
    "or --enable-model-api."
)

_M = Parameter("model_name", "path", "Name of the model.")
_V = Parameter("model_version", "path", "Version of the model ('all' to describe every version).")
_Q_LIMIT = Parameter("limit", "query", "Page size (0-100).", "integer", default=100)
_Q_TOKEN = Parameter("next_page_token", "query", "Offset of the page.", "integer", default=0)
_Q_CUSTOM = Parameter("customized", "query", "Add the handler's metadata.", "boolean")
_REGISTER_QUERY = (
    Parameter("url", "query", "Archive name in the model store, or an allowed URL.", required=True),
    Parameter("model_name", "query", "Overrides the manifest's model name."),
    Parameter("handler", "query", "Overrides the manifest's handler."),
    Parameter("runtime", "query", "Runtime (python)."),
    Parameter("batch_size", "query", "Inference batch size.", "integer", default=1),
    Parameter("max_batch_delay", "query", "Max batch wait in ms.", "integer", default=100),
    Parameter("initial_workers", "query", "Workers to start.", "integer", default=0),
    Parameter("synchronous", "query", "Wait for the workers.", "boolean", default=True),
    Parameter("response_timeout", "query", "Seconds a worker may take.", "integer"),
    Parameter("startup_timeout", "query", "Seconds a worker may take to load.", "integer"),
)
_SCALE_QUERY = (
    Parameter("min_worker", "query", "Minimum workers.", "integer", default=1),
    Parameter("max_worker", "query", "Maximum workers (default min_worker).", "integer"),
    Parameter("synchronous", "query", "Wait for the workers.", "boolean", default=False),
    Parameter("model_version", "query", "Version (instead of the path)."),
)
_AUTH_ERRORS = ((400, "Bad parameter."), (401, "Missing or wrong management token."))
_NOT_FOUND = ((404, "Model or version not found."),)


class ManagementApi:
    """Endpoints of the management listener; ``routes()`` lists them for the router."""

    def __init__(
        self,
        plane: ManagementPlane,
        metrics: FrontendMetrics,
        tokens: TokenRotator | None,
        *,
        enable_model_api: bool,
        max_request_size: int,
        title: str = "torchwick management API",
    ) -> None:
        self.plane = plane
        self.metrics = metrics
        self.tokens = tokens
        self.enable_model_api = enable_model_api
        self.max_request_size = max_request_size
        self.title = title
        self._routes: list[Route] = []

    def routes(self) -> list[Route]:
        """The management routes with their documents."""
        if self._routes:
            return self._routes
        status_ok = ((200, "Done."), (202, "Accepted; workers are being updated."))
        self._routes = [
            Route.make(
                "/models",
                {"GET": self._list, "POST": self._register},
                "management",
                {
                    "GET": Operation("listModels", "List models.", (_Q_LIMIT, _Q_TOKEN)),
                    "POST": Operation(
                        "registerModel",
                        "Register a model (405 unless enable_model_api).",
                        _REGISTER_QUERY,
                        request_body=("application/json",),
                        responses=(
                            *status_ok,
                            (206, "Workers scaling in progress."),
                            *_AUTH_ERRORS,
                            (404, "Archive not found or URL not allowed."),
                            (405, "Model API disabled."),
                            (409, "That model name and version are registered already."),
                            (500, "Workers failed to start."),
                        ),
                    ),
                },
            ),
            self._model_route("/models/{model_name}", (_M,)),
            self._model_route("/models/{model_name}/{model_version}", (_M, _V)),
            Route.make(
                "/models/{model_name}/{model_version}/set-default",
                {"PUT": self._set_default},
                "management",
                {
                    "PUT": Operation(
                        "setDefault",
                        "Make this version the default.",
                        (_M, _V),
                        responses=((200, "Default updated."), *_AUTH_ERRORS, *_NOT_FOUND),
                    )
                },
            ),
            Route.make(
                "/v1/models/{model_name}",
                {"GET": self._ready},
                "management",
                {"GET": Operation("modelReady", "KServe v1 readiness.", (_M,))},
            ),
        ]
        if self.tokens is not None:
            # Only with token authorization on: otherwise there are no keys to rotate.
            self._routes.append(
                Route.make(
                    "/token",
                    {"GET": self._rotate},
                    "api",
                    {
                        "GET": Operation(
                            "rotateToken",
                            "Replace the inference or management key (needs the API key).",
                            (Parameter("type", "query", "inference or management", required=True),),
                            responses=((200, "Rotated."), *_AUTH_ERRORS),
                        )
                    },
                )
            )
        return self._routes

    def _model_route(self, pattern: str, params: tuple[Parameter, ...]) -> Route:
        errors = (*_AUTH_ERRORS, *_NOT_FOUND)
        return Route.make(
            pattern,
            {
                "GET": self._describe,
                "PUT": self._scale,
                "DELETE": self._unregister,
                "OPTIONS": self._model_api,
            },
            "management",
            {
                "GET": Operation(
                    f"describeModel{len(params)}",
                    "Describe.",
                    (*params, _Q_CUSTOM),
                    responses=((200, "Description (a list)."), *errors),
                ),
                "PUT": Operation(
                    f"scaleModel{len(params)}",
                    "Scale workers.",
                    (*params, *_SCALE_QUERY),
                    responses=((200, "Scaled."), (202, "Scaling."), (206, "In progress."), *errors),
                ),
                "DELETE": Operation(
                    f"unregisterModel{len(params)}",
                    "Unregister (405 unless enable_model_api).",
                    params,
                    responses=(
                        (200, "Unregistered."),
                        *errors,
                        (403, "Cannot remove the default version while others exist."),
                        (405, "Model API disabled."),
                        (408, "Timed out."),
                    ),
                ),
            },
        )

    # -- endpoints ---------------------------------------------------------------------------

    async def _list(self, request: Request) -> None:
        params = parse_params(ListParams, request.query)
        await request.respond_json(200, self.plane.list_models(params.clamped_limit, params.offset))

    async def _register(self, request: Request) -> None:
        if not self.enable_model_api:
            raise MethodNotAllowed(MODEL_API_DISABLED)
        values: dict[str, Any] = dict(request.query)
        if mime_type(request.header(b"content-type")) == "application/json":
            body = await request.read_body(self.max_request_size)
            if body.strip():
                values.update(parse_json_object(body))
        params = parse_params(RegisterParams, values)
        if not params.url:
            raise BadRequest("Parameter url is required.")
        result = await self.plane.register(
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
        await request.respond_json(result.status_code, {"status": result.message})

    async def _describe(self, request: Request) -> None:
        model = request.params["model_name"]
        version = request.params.get("model_version")
        params = parse_params(DescribeParams, request.query)
        if version == "all":
            document = self.plane.describe(model, None, all_versions=True)
        elif params.customized:
            document = await self.plane.describe_customized(model, version)
        else:
            document = self.plane.describe(model, version)
        await request.respond_json(200, document)

    async def _scale(self, request: Request) -> None:
        params = parse_params(ScaleParams, request.query)
        version = request.params.get("model_version") or params.model_version
        result = await self.plane.scale(
            request.params["model_name"],
            version,
            params.min_worker,
            params.max_worker,
            params.synchronous,
        )
        await request.respond_json(result.status_code, {"status": result.message})

    async def _unregister(self, request: Request) -> None:
        if not self.enable_model_api:
            raise MethodNotAllowed(MODEL_API_DISABLED)
        model = request.params["model_name"]
        version = request.params.get("model_version")
        result = await self.plane.unregister(model, version)
        if result.status_code < 300:
            self.metrics.forget_model(model, version)
        await request.respond_json(result.status_code, {"status": result.message})

    async def _set_default(self, request: Request) -> None:
        params = request.params
        result = self.plane.set_default(params["model_name"], params["model_version"])
        await request.respond_json(result.status_code, {"status": result.message})

    async def _ready(self, request: Request) -> None:
        model = request.params["model_name"]
        await request.respond_json(200, {"name": model, "ready": self.plane.model_ready(model)})

    async def _rotate(self, request: Request) -> None:
        assert self.tokens is not None  # the route exists only with token authorization
        params = parse_params(TokenParams, request.query)
        if params.type is None:
            raise BadRequest("Parameter type is required: inference or management.")
        self.tokens.rotate(params.type)
        # TorchServe answers an empty JSON document: just the newline.
        await request.respond(200, b"\n", JSON_CONTENT_TYPE)

    async def _model_api(self, request: Request) -> None:
        model = request.params["model_name"]
        version = request.params.get("model_version")
        self.plane.describe(model, None if version == "all" else version)  # 404s if unknown
        document = describe_model(self.title, self.routes(), "/models/{model_name}", model)
        await request.respond_json(200, document)
