"""OpenAPI 3.0.1 descriptions, written from the routes a listener actually serves.

``describe_listener`` answers ``OPTIONS /`` and ``/api-description``; ``describe_model``
answers ``OPTIONS`` on a model's own path (its routes with the model name filled in). Both are
derived from the ``Operation`` documents attached to the router's routes, so a route cannot be
served without being described, nor described without being served.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torchwick

from .asgi import JSON_CONTENT_TYPE, Request, json_bytes
from .router import ANY_METHOD, Operation, Parameter, Route

OPENAPI_VERSION = "3.0.1"

_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["code", "type", "message"],
    "properties": {
        "code": {"type": "integer", "description": "The HTTP status code."},
        "type": {"type": "string", "description": "The error class, e.g. ModelNotFoundException."},
        "message": {"type": "string", "description": "What went wrong."},
    },
}


def describe_listener(title: str, routes: Iterable[Route]) -> dict[str, Any]:
    """The OpenAPI document of every documented route in ``routes``."""
    return _document(title, _paths(routes, None))


def describe_model(title: str, routes: Iterable[Route], prefix: str, model: str) -> dict[str, Any]:
    """The OpenAPI document of the routes under ``prefix`` (``/predictions/{model_name}``...),
    with ``{model_name}`` replaced by ``model``."""
    return _document(f"{title}: {model}", _paths(routes, (prefix, model)))


def _document(title: str, paths: dict[str, Any]) -> dict[str, Any]:
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": title,
            "description": "torchwick, a TorchServe-compatible model server.",
            "version": getattr(torchwick, "__version__", "0.1.0"),
        },
        "paths": paths,
        "components": {"schemas": {"Error": _ERROR_SCHEMA}},
    }


def _paths(routes: Iterable[Route], model_filter: tuple[str, str] | None) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for route in routes:
        if not route.docs:
            continue
        path = route.pattern.replace("...}", "}") or "/"
        if model_filter is not None:
            prefix, model = model_filter
            if not path.startswith(prefix):
                continue
            path = path.replace("{model_name}", model)
        item = paths.setdefault(path, {})
        for method, operation in route.docs.items():
            key = "post" if method == ANY_METHOD else method.lower()
            item[key] = _operation(operation, model_filter is not None)
    return paths


def _operation(operation: Operation, model_fixed: bool) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, description in operation.responses:
        response: dict[str, Any] = {"description": description}
        if status < 300 and operation.response_media is not None:
            response["content"] = {operation.response_media: {"schema": {}}}
        elif status >= 400:
            response["content"] = {
                "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
            }
        responses[str(status)] = response
    result: dict[str, Any] = {
        "operationId": operation.operation_id,
        "summary": operation.summary,
        "parameters": [
            _parameter(p)
            for p in operation.parameters
            if not (model_fixed and p.name == "model_name")
        ],
        "responses": responses,
    }
    if operation.request_body:
        result["requestBody"] = {
            "required": False,
            "content": {media: {"schema": {}} for media in operation.request_body},
        }
    return result


def _parameter(parameter: Parameter) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": parameter.schema_type}
    if parameter.default is not None:
        schema["default"] = parameter.default
    return {
        "in": parameter.where,
        "name": parameter.name,
        "description": parameter.description,
        "required": parameter.where == "path" or parameter.required,
        "schema": schema,
    }


class ApiDescription:
    """``OPTIONS /`` and ``/api-description`` for one listener (no token needed, as in
    TorchServe). ``bind`` gives it the listener's full route list once it is assembled."""

    def __init__(self, title: str) -> None:
        self.title = title
        self._routes: tuple[Route, ...] = ()
        self._document: bytes | None = None

    def routes(self) -> list[Route]:
        """The two description routes (documented themselves only as ``OPTIONS /``)."""
        doc = Operation("apiDescription", "This OpenAPI document.")
        return [
            Route.make("/", {"OPTIONS": self.describe}, "none", {"OPTIONS": doc}),
            Route.make("/api-description", {ANY_METHOD: self.describe}, "none"),
        ]

    def bind(self, routes: Iterable[Route]) -> None:
        """Fix the routes the document describes (call once the router is built)."""
        self._routes = tuple(routes)
        self._document = json_bytes(describe_listener(self.title, self._routes))

    async def describe(self, request: Request) -> None:
        """Send the listener's OpenAPI document (built once, at ``bind``)."""
        if self._document is None:
            self.bind(())
        assert self._document is not None
        await request.respond(200, self._document, JSON_CONTENT_TYPE)
