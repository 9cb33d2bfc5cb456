"""Assemble the REST APIs into one ASGI app per listener.

``RestApis`` holds what every listener shares (the data plane, tokens, metrics, access log);
``listener_app(["inference", "management"])`` gives the app for a listener serving those APIs:
a FastAPI app (management, metrics, ``/openapi.json``, ``/docs``, TorchServe's ``OPTIONS /``
and ``/api-description``) with the inference routes mounted as raw ASGI Starlette routes,
wrapped in the serving middleware. The composition root and the tests both use this, so what
the tests drive is what the server runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

from fastapi import FastAPI
from fastapi.responses import Response
from starlette.routing import BaseRoute, Router
from starlette.types import ASGIApp

from torchwick.server.observability.access_log import AccessRecorder
from torchwick.server.observability.metrics import FrontendMetrics
from torchwick.server.oip.serving import OipPlane
from torchwick.server.settings import Settings

from .api_docs import ApiDocuments
from .errors_http import install_error_handlers
from .middleware import InflightLimit, ServingMiddleware
from .responses import JSON_CONTENT_TYPE, fixed_headers, json_bytes
from .rest_inference import InferenceApi, InferencePlane
from .rest_management import (
    ManagementPlane,
    TokenAuthorityLike,
    management_router,
    token_router,
)
from .rest_metrics import metrics_router
from .rest_oip import OipRestApi
from .rest_traffic import TrafficControl, traffic_router

ApiName = Literal["inference", "management", "metrics"]

TITLES: dict[str, str] = {
    "inference": "torchwick inference API",
    "management": "torchwick management API",
    "metrics": "torchwick metrics API",
}


class RestPlane(InferencePlane, ManagementPlane, OipPlane, Protocol):
    """What the REST APIs need from the data plane (``DataPlane`` satisfies it)."""

    @property
    def traffic(self) -> TrafficControl: ...


class RestApis:
    """The three REST APIs over one data plane; see the module docs."""

    def __init__(
        self,
        settings: Settings,
        plane: RestPlane,
        metrics: FrontendMetrics,
        tokens: TokenAuthorityLike | None,
        *,
        access_log: AccessRecorder | None = None,
    ) -> None:
        self.settings = settings
        self.plane = plane
        self.metrics = metrics
        self.tokens = tokens
        self.access_log = access_log
        self.fixed_headers = fixed_headers(settings)
        #: One in-flight count for every listener of the server.
        self.inflight = InflightLimit(settings.max_inflight_requests, settings.retry_after_s)

    def listener_app(self, apis: Sequence[str]) -> ASGIApp:
        """The ASGI app of a listener serving ``apis`` (see the module docs)."""
        settings = self.settings
        docs = ApiDocuments(" + ".join(TITLES[api] for api in apis))
        hot_routes: list[BaseRoute] = []
        app = FastAPI(
            # FastAPI's native OpenTelemetry looks its providers up on every request; torchwick
            # measures and traces below the adapters instead.
            telemetry={"tracing": False, "metrics": False, "logs": False},
            title=docs.title,
            openapi_url="/openapi.json",
            docs_url="/docs",
            redoc_url=None,
            redirect_slashes=False,
        )
        install_error_handlers(app)
        if "inference" in apis:
            inference = InferenceApi(
                self.plane,
                self.tokens,
                max_request_size=settings.max_request_size,
                docs=docs,
                max_parts=settings.max_multipart_parts,
                ascii_form_values=settings.form_value_charset == "ascii",
            )
            oip = OipRestApi(self.plane, self.tokens, max_request_size=settings.max_request_size)
            hot_routes = [*inference.routes(), *oip.raw_routes()]
            app.include_router(oip.router())
            docs.extra_paths.append(inference.paths)
            docs.extra_paths.append(oip.paths)
        if "management" in apis:
            app.include_router(
                management_router(
                    self.plane,
                    self.metrics,
                    self.tokens,
                    enable_model_api=settings.enable_model_api,
                    max_request_size=settings.max_request_size,
                    docs=docs,
                )
            )
            traffic = traffic_router(
                self.plane.traffic, self.tokens, max_request_size=settings.max_request_size
            )
            app.include_router(traffic)
            if self.tokens is not None:
                app.include_router(token_router(self.tokens))
        if "metrics" in apis:
            app.include_router(metrics_router(self.metrics.registry))

        async def api_description() -> Response:
            document = json_bytes(docs.listener_document())
            return Response(document, 200, media_type=JSON_CONTENT_TYPE.decode())

        app.add_api_route(
            "/",
            api_description,
            methods=["OPTIONS"],
            operation_id="apiDescription",
            summary="TorchServe's API description of this listener (OpenAPI 3.0.1).",
        )
        app.add_api_route(
            "/api-description",
            api_description,
            methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
            include_in_schema=False,
        )
        docs.bind(app)
        # The hot path (predictions, explanations, /ping, OIP infer) is routed by a Starlette
        # Router of its own in front of FastAPI: FastAPI's middleware stack and per-request
        # telemetry cost more than the rest of the frontend's work for a small model
        # (docs/performance.md); everything else falls through to the FastAPI app.
        served: ASGIApp = app
        if hot_routes:
            served = Router(routes=hot_routes, default=app, redirect_slashes=False)
        return ServingMiddleware(
            served,
            self.fixed_headers,
            max_request_size=settings.max_request_size,
            metrics=self.metrics,
            access_log=self.access_log,
            inflight=self.inflight,
        )
