"""The metrics API: ``GET /metrics[?name[]=a&name[]=b]`` in Prometheus text format 0.0.4.

Never token-protected (TorchServe's rule): scrapers carry no credentials, and the listener
binds to localhost by default.
"""

from __future__ import annotations

from prometheus_client.registry import Collector

from torchwick.server.observability.exposition import CONTENT_TYPE, render_text

from .asgi import Request
from .router import Operation, Parameter, Route


class MetricsApi:
    """The ``/metrics`` endpoint over a prometheus-client registry."""

    def __init__(self, registry: Collector) -> None:
        self.registry = registry

    def routes(self) -> list[Route]:
        """The metrics route."""
        doc = Operation(
            "metrics",
            "Prometheus metrics (text format 0.0.4).",
            (Parameter("name[]", "query", "Only these metric names (repeatable)."),),
            response_media=CONTENT_TYPE.decode("latin-1"),
        )
        return [Route.make("/metrics", {"GET": self.metrics}, "none", {"GET": doc})]

    async def metrics(self, request: Request) -> None:
        """Render the registry, optionally restricted to ``name[]`` values."""
        names = request.query_all("name[]") if request.scope.get("query_string") else []
        await request.respond(200, render_text(self.registry, names), CONTENT_TYPE)
