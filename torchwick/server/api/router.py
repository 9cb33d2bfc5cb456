"""The hand-written router: path segments to an endpoint, plus what OpenAPI needs to know.

A route is a tuple of segments; ``{name}`` captures one segment and a final ``{name...}``
captures the rest (one or more segments, joined by ``/``). Routes are indexed by their first
literal segment, so a lookup is one dict access and a few tuple comparisons. As in
TorchServe, trailing slashes are ignored: ``/models/x/`` is ``/models/x``.

Each route also carries its ``Operation`` documents, one per documented method, from which
``openapi.py`` writes the API description; the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from torchwick.server.errors import MethodNotAllowed, ResourceNotFound

from .asgi import Endpoint

#: Which token a route needs: a listener's key kind, the API key, or none.
AuthKind = Literal["inference", "management", "api", "none"]

ANY_METHOD = "*"

NOT_FOUND_MESSAGE = "Requested resource is not found, please refer to API document."
NOT_ALLOWED_MESSAGE = "Requested method is not allowed, please refer to API document."


@dataclass(frozen=True, slots=True)
class Parameter:
    """One documented path or query parameter."""

    name: str
    where: Literal["path", "query"]
    description: str
    schema_type: Literal["string", "integer", "boolean", "number"] = "string"
    required: bool = False
    default: str | int | bool | None = None


@dataclass(frozen=True, slots=True)
class Operation:
    """The OpenAPI document of one method on one route."""

    operation_id: str
    summary: str
    parameters: tuple[Parameter, ...] = ()
    #: Media types the request body may have; empty means no body.
    request_body: tuple[str, ...] = ()
    #: status -> description; every operation also documents the error JSON.
    responses: tuple[tuple[int, str], ...] = ((200, "OK"),)
    #: The success body's media type; ``None`` means "whatever the model returns".
    response_media: str | None = "application/json"


@dataclass(frozen=True, slots=True)
class Route:
    """A path pattern, its endpoint per method (``*`` for any method) and its documents."""

    pattern: str
    endpoints: dict[str, Endpoint]
    auth: AuthKind
    docs: dict[str, Operation] = field(default_factory=dict)
    segments: tuple[str, ...] = ()

    @staticmethod
    def make(
        pattern: str,
        endpoints: Mapping[str, Endpoint],
        auth: AuthKind,
        docs: Mapping[str, Operation] | None = None,
    ) -> Route:
        """Build a route from ``/a/{b}/c``-style text."""
        segments = tuple(part for part in pattern.strip("/").split("/") if part)
        return Route(pattern, dict(endpoints), auth, dict(docs or {}), segments)


class Router:
    """Matches ``(method, path)`` to a route; raises 404 or 405 as TorchServe does."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes: tuple[Route, ...] = tuple(routes)
        self._by_head: dict[str, list[Route]] = {}
        for route in self.routes:
            head = route.segments[0] if route.segments else ""
            if head.startswith("{"):
                raise ValueError(f"route {route.pattern} must start with a literal segment")
            self._by_head.setdefault(head, []).append(route)

    def resolve(self, method: str, path: str) -> tuple[Route, Endpoint, dict[str, str]]:
        """The route, its endpoint for ``method`` and the path captures.

        Raises ``ResourceNotFound`` when no pattern matches and ``MethodNotAllowed`` when
        one matches but not for this method.
        """
        stripped = path.strip("/")
        parts = stripped.split("/") if stripped else []
        candidates = self._by_head.get(parts[0] if parts else "")
        if candidates:
            for route in candidates:
                params = _match(route.segments, parts)
                if params is None:
                    continue
                endpoint = route.endpoints.get(method) or route.endpoints.get(ANY_METHOD)
                if endpoint is None:
                    raise MethodNotAllowed(NOT_ALLOWED_MESSAGE)
                return route, endpoint, params
        raise ResourceNotFound(NOT_FOUND_MESSAGE)


def _match(pattern: tuple[str, ...], parts: list[str]) -> dict[str, str] | None:
    params: dict[str, str] = {}
    count = len(pattern)
    for index, want in enumerate(pattern):
        if index >= len(parts):
            return None
        if want.endswith("...}"):
            # A rest capture takes one or more segments; none means the shorter route.
            params[want[1:-4]] = "/".join(parts[index:])
            return params
        got = parts[index]
        if want[0] == "{":
            if not got:
                return None
            params[want[1:-1]] = got
        elif got != want:
            return None
    return params if len(parts) == count else None
