"""Assemble the REST APIs into one ASGI app per listener.

``RestApis`` builds the inference, management and metrics endpoints once;
``listener_app(["inference", "management"])`` gives the app for a listener that serves those
APIs (plus its own API description). The composition root and the tests both use this, so
what the tests drive is what the server runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, Protocol

from torchwick.server.observability.metrics import FrontendMetrics
from torchwick.server.settings import Settings

from .asgi import fixed_headers
from .listener import AccessRecorder, ListenerApp
from .openapi import ApiDescription
from .ports import ManagementPlane
from .rest_inference import InferenceApi
from .rest_management import ManagementApi
from .rest_metrics import MetricsApi
from .router import Route, Router
from .tokens_port import TokenChecker, TokenRotator

ApiName = Literal["inference", "management", "metrics"]

TITLES: dict[str, str] = {
    "inference": "torchwick inference API",
    "management": "torchwick management API",
    "metrics": "torchwick metrics API",
}


class TokenAuthorityLike(TokenChecker, TokenRotator, Protocol):
    """Checks and rotates tokens (``TokenAuthority``)."""


class RestApis:
    """The three REST APIs over one data plane; see the module docs."""

    def __init__(
        self,
        settings: Settings,
        plane: ManagementPlane,
        metrics: FrontendMetrics,
        tokens: TokenAuthorityLike | None,
        *,
        startup_done: Callable[[], bool] = lambda: True,
        access_log: AccessRecorder | None = None,
    ) -> None:
        self.metrics = metrics
        self.tokens = tokens
        self.access_log = access_log
        self.fixed_headers = fixed_headers(settings)
        self.inference = InferenceApi(
            plane,
            metrics,
            max_request_size=settings.max_request_size,
            forward_authorization=tokens is None,
            startup_done=startup_done,
        )
        self.management = ManagementApi(
            plane,
            metrics,
            tokens,
            enable_model_api=settings.enable_model_api,
            max_request_size=settings.max_request_size,
        )
        self.metrics_api = MetricsApi(metrics.registry)
        self._routes: dict[str, list[Route]] = {
            "inference": self.inference.routes(),
            "management": self.management.routes(),
            "metrics": self.metrics_api.routes(),
        }

    def listener_app(self, apis: Sequence[str]) -> ListenerApp:
        """The ASGI app of a listener serving ``apis`` (and ``OPTIONS /``/``/api-description``)."""
        description = ApiDescription(" + ".join(TITLES[api] for api in apis))
        routes = [route for api in apis for route in self._routes[api]]
        router = Router([*routes, *description.routes()])
        description.bind(router.routes)
        return ListenerApp(
            router,
            self.fixed_headers,
            tokens=self.tokens,
            metrics=self.metrics,
            access_log=self.access_log,
        )
