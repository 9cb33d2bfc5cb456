"""How errors become HTTP answers: one place, driven by ``ERROR_TABLE``.

- A ``TorchwickError`` from any route: its status, and TorchServe's ``{"code", "type",
  "message"}`` JSON (a 413 also closes the connection: the body was never read).
- Starlette's own 404 (no route) and 405 (route, wrong method): TorchServe's texts in the
  same JSON.
- FastAPI's request validation errors (a query value that does not parse): TorchServe's 400
  JSON naming each bad parameter and its value, never FastAPI's 422 body.
- Anything else: a JSON 500 without internals (the traceback goes to the server log).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from torchwick.server.errors import (
    BadRequest,
    InternalError,
    MethodNotAllowed,
    PayloadTooLarge,
    ResourceNotFound,
    TorchwickError,
    error_class_for_http,
)

from .management_params import EXPECTED_VALUE
from .responses import (
    JSON_CONTENT_TYPE,
    NOT_ALLOWED_MESSAGE,
    NOT_FOUND_MESSAGE,
    error_document,
    error_headers,
)

log = logging.getLogger("torchwick.server.api")


def error_response(error: TorchwickError) -> Response:
    """The JSON answer for ``error``."""
    headers = {"connection": "close"} if isinstance(error, PayloadTooLarge) else {}
    for name, value in error_headers(error):
        headers[name.decode("latin-1")] = value.decode("latin-1")
    return Response(
        error_document(error),
        error.status.http_status,
        headers=headers,
        media_type=JSON_CONTENT_TYPE.decode(),
    )


def validation_message(exc: RequestValidationError) -> str:
    """``Invalid value for parameter NAME: 'VALUE' (EXPECTED)`` for each problem."""
    problems = []
    for error in exc.errors():
        location = [str(part) for part in error.get("loc", ()) if part not in ("query", "path")]
        name = ".".join(location) or "request"
        expected = EXPECTED_VALUE.get(str(error.get("type")), str(error.get("msg")))
        problems.append(f"Invalid value for parameter {name}: {error.get('input')!r} ({expected})")
    return "; ".join(problems)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers described in the module docs on ``app``."""

    async def torchwick_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, TorchwickError)
        return error_response(exc)

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        error: TorchwickError
        if exc.status_code == 404:
            error = ResourceNotFound(NOT_FOUND_MESSAGE)
        elif exc.status_code == 405:
            error = MethodNotAllowed(NOT_ALLOWED_MESSAGE)
        else:
            error = error_class_for_http(exc.status_code)(str(exc.detail))
        return error_response(error)

    async def validation_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(BadRequest(validation_message(exc)))

    async def unexpected(request: Request, exc: Exception) -> Response:
        # The serving middleware logs the traceback once FastAPI re-raises it.
        return error_response(InternalError("Internal server error; see the server log"))

    handlers: dict[Any, Any] = {
        TorchwickError: torchwick_error,
        StarletteHTTPException: http_error,
        RequestValidationError: validation_error,
        Exception: unexpected,
    }
    for kind, handler in handlers.items():
        app.add_exception_handler(kind, handler)
