"""The metrics API: ``GET /metrics[?name[]=a&name[]=b]`` in Prometheus text format 0.0.4.

Never token-protected (TorchServe's rule): scrapers carry no credentials, and the listener
binds to localhost by default.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client.registry import Collector

from torchwick.server.observability.exposition import CONTENT_TYPE, render_text


def metrics_router(registry: Collector) -> APIRouter:
    """The ``/metrics`` route over a prometheus-client registry."""
    router = APIRouter()

    @router.get(
        "/metrics",
        operation_id="metrics",
        summary="Prometheus metrics (text format 0.0.4); repeat name[] to select families.",
        response_class=Response,
    )
    async def metrics(request: Request) -> Response:
        names = request.query_params.getlist("name[]")
        return Response(render_text(registry, names), 200, media_type=CONTENT_TYPE.decode())

    return router
