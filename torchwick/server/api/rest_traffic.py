"""The traffic policy resource on the management API: ``PUT/GET/DELETE /traffic/{model}``.

``PUT`` takes the policy as a JSON object (fields in ``docs/traffic.md``) and answers the
policy in force with its live counters, as ``GET`` does; ``DELETE`` goes back to "default
version only". Bad input is a 400 whose message names the field, and the policy in force stays;
an unknown model is the usual 404. Every route needs the management token when token
authorization is on, like the other management routes.
"""

from __future__ import annotations

from typing import Any, Protocol

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from .management_params import parse_json_object
from .responses import read_body
from .rest_management import TokenAuthorityLike, json_response


class TrafficControl(Protocol):
    """The data plane's traffic engine (``DataPlane.traffic``), as these routes use it."""

    def set_policy(self, model: str, raw: object, origin: str = "api") -> object: ...
    def policy_status(self, model: str) -> dict[str, Any]: ...
    def clear_policy(self, model: str) -> None: ...


def traffic_router(
    traffic: TrafficControl, tokens: TokenAuthorityLike | None, *, max_request_size: int
) -> APIRouter:
    """The three routes (see the module docs)."""
    guarded: list[Any] = []
    if tokens is not None:

        def require_management(request: Request) -> None:
            tokens.check("management", request.headers.get("authorization"))

        guarded = [Depends(require_management)]
    router = APIRouter(dependencies=guarded)

    @router.put(
        "/traffic/{model_name}",
        operation_id="setTrafficPolicy",
        summary="Set the model's traffic policy (weights, sticky, shadow, canary).",
    )
    async def set_policy(model_name: str, request: Request) -> Response:
        body = await read_body(request.scope, request.receive, max_request_size)
        traffic.set_policy(model_name, parse_json_object(body))
        return json_response(200, traffic.policy_status(model_name))

    @router.get(
        "/traffic/{model_name}",
        operation_id="getTrafficPolicy",
        summary="The model's traffic policy with live counters.",
    )
    async def get_policy(model_name: str) -> Response:
        return json_response(200, traffic.policy_status(model_name))

    @router.delete(
        "/traffic/{model_name}",
        operation_id="deleteTrafficPolicy",
        summary="Back to the default version only.",
    )
    async def delete_policy(model_name: str) -> Response:
        traffic.clear_policy(model_name)
        return json_response(200, {"status": f'Traffic policy of model "{model_name}" removed'})

    return router
