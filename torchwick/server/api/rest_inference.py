"""The REST inference API: ``/ping``, ``/predictions/...`` and ``/explanations/...``.

These routes are raw ASGI endpoints mounted as Starlette ``Route``s in the listener's FastAPI
app: the prediction path is the server's hot path, and FastAPI's per-request dependency
solving and response objects cost more than the whole rest of the frontend's work for a small
model (``benchmarks/bench_http_layer.py``). Routing, error handling and middleware are still
Starlette's; only the endpoint body is hand-written.

How a request becomes an ``InferenceRequest`` (TorchServe's rules): every HTTP header, name
lower-cased, becomes request metadata; ``explain`` is set for explanations; ``path_suffix`` is
the extra path after the version (TorchServe's ``url_path``; ``""`` when none). The body
becomes named inputs as ``inputs.parse_inputs`` describes. The query string is ignored, as in
TorchServe. When token authorization is on, the ``Authorization`` header (the server's own
credential) is not passed to the handler.

The answer is the handler's: its status, content type (none at all unless it set one),
headers and body. Intermediate responses start a chunked response at the first one; the
final response is the last chunk. If the client disconnects while its request is queued or
running, the data plane call is cancelled (``disconnect.py``); a still-queued request never
reaches a worker.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from starlette.routing import BaseRoute, Route

from torchwick.server.contracts import (
    InferencePort,
    InferenceRequest,
    InferenceResult,
    ModelStatus,
)
from torchwick.server.errors import InternalError, TorchwickError

from .api_docs import ApiDocuments
from .disconnect import DisconnectMonitor
from .inputs import parse_inputs
from .responses import (
    CLIENT_GONE_KEY,
    JSON_CONTENT_TYPE,
    MODEL_KEY,
    REQUEST_ID_KEY,
    STARTED_KEY,
    ClientDisconnected,
    RawHeaders,
    Receive,
    Scope,
    Send,
    header,
    json_bytes,
    read_body,
    send_response,
)
from .tokens_port import TokenChecker

log = logging.getLogger(__name__)

_HEALTHY = json_bytes({"status": "Healthy"})
_UNHEALTHY = json_bytes({"status": "Unhealthy"})
#: Response headers the server owns; a handler cannot set these.
_RESERVED = frozenset(
    {"content-length", "transfer-encoding", "connection", "x-request-id", "x-model-version"}
)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

IntermediateSink = Callable[[InferenceResult], None]


class InferencePlane(InferencePort, Protocol):
    """The part of the data plane the inference routes use."""

    def describe(
        self, model: str, version: str | None, *, all_versions: bool = False
    ) -> list[ModelStatus]:
        """Raises ``ModelNotFound``/``ModelVersionNotFound`` for unknown names."""
        ...


_MODEL = {"name": "model_name", "in": "path", "required": True, "schema": {"type": "string"}}
_VERSION = {"name": "model_version", "in": "path", "required": True, "schema": {"type": "string"}}
_EXTRA = {
    "name": "url_path",
    "in": "path",
    "required": True,
    "description": "Extra path passed to the handler as header url_path.",
    "schema": {"type": "string"},
}
_INFER_RESPONSES = {
    "200": "The handler's answer (status, content type and body are the handler's).",
    "400": "Bad input.",
    "401": "Missing or wrong inference token.",
    "404": "Model or version not found.",
    "413": "Request body larger than max_request_size.",
    "500": "Worker died, or internal error.",
    "503": "No worker available, or the model's queue is full.",
    "504": "The worker did not answer within response_timeout.",
    "507": "Out of memory.",
}
_BODY_TYPES = ("application/json", "multipart/form-data", "application/octet-stream", "*/*")


def _operation(operation_id: str, summary: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, text in _INFER_RESPONSES.items():
        response: dict[str, Any] = {"description": text}
        if int(status) >= 400:
            response["content"] = {
                "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
            }
        responses[status] = response
    return {
        "operationId": operation_id,
        "summary": summary,
        "parameters": params,
        "requestBody": {
            "required": False,
            "content": {media: {"schema": {}} for media in _BODY_TYPES},
        },
        "responses": responses,
    }


class InferenceApi:
    """The inference routes over one data plane; ``routes()`` for the app, ``paths()`` for
    its API document."""

    def __init__(
        self,
        plane: InferencePlane,
        tokens: TokenChecker | None,
        *,
        max_request_size: int,
        docs: ApiDocuments,
        max_parts: int = 256,
        ascii_form_values: bool = False,
    ) -> None:
        self.plane = plane
        self.tokens = tokens
        self.max_request_size = max_request_size
        self.max_parts = max_parts
        self.ascii_form_values = ascii_form_values
        self.docs = docs
        self.disconnects = DisconnectMonitor()

    def routes(self) -> list[BaseRoute]:
        """``/ping`` (no token: health checks carry none) and the prediction routes."""
        routes: list[BaseRoute] = [Route("/ping", _Ping(self.plane))]
        for kind in ("predictions", "explanations"):
            endpoint = _Infer(self, kind)
            routes.append(Route(f"/{kind}/{{model_name}}", endpoint))
            routes.append(Route(f"/{kind}/{{model_name}}/{{model_version}}", endpoint))
            routes.append(
                Route(f"/{kind}/{{model_name}}/{{model_version}}/{{url_path:path}}", endpoint)
            )
        return routes

    @staticmethod
    def paths() -> dict[str, Any]:
        """The OpenAPI paths of these routes (they are not FastAPI operations)."""
        ping = {
            "get": {
                "operationId": "ping",
                "summary": "Health: 200 Healthy, or 500 Unhealthy while any model lacks its "
                "minimum workers or the startup models are still loading.",
                "responses": {
                    "200": {"description": "Healthy"},
                    "500": {"description": "Unhealthy"},
                },
            }
        }
        paths: dict[str, Any] = {"/ping": ping}
        for kind in ("predictions", "explanations"):
            what = "Explanations" if kind == "explanations" else "Predictions"
            summary = f"{what} from the model (any method but OPTIONS, which describes it)."
            shapes = (
                (f"/{kind}/{{model_name}}", [_MODEL]),
                (f"/{kind}/{{model_name}}/{{model_version}}", [_MODEL, _VERSION]),
                (
                    f"/{kind}/{{model_name}}/{{model_version}}/{{url_path}}",
                    [_MODEL, _VERSION, _EXTRA],
                ),
            )
            for path, params in shapes:
                paths[path] = {"post": _operation(f"{kind}_{len(params)}", summary, params)}
        return paths


class _Ping:
    """``/ping``, any method."""

    def __init__(self, plane: InferencePlane) -> None:
        self.plane = plane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.plane.ready():
            await send_response(send, 200, _HEALTHY, JSON_CONTENT_TYPE)
        else:
            await send_response(send, 500, _UNHEALTHY, JSON_CONTENT_TYPE)


class _Infer:
    """One prediction or explanation route family (a raw ASGI endpoint)."""

    def __init__(self, api: InferenceApi, kind: str) -> None:
        self.api = api
        self.kind = kind
        self.explain = kind == "explanations"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        api = self.api
        params: dict[str, str] = scope["path_params"]
        model = params["model_name"]
        version = params.get("model_version")
        if scope["method"] == "OPTIONS":
            api.plane.describe(model, version)  # 404s if unknown
            document = api.docs.model_document(f"/{self.kind}/{{model_name}}", model)
            await send_response(send, 200, json_bytes(document), JSON_CONTENT_TYPE)
            return
        tokens = api.tokens
        if tokens is not None:
            raw = header(scope, b"authorization")
            tokens.check("inference", None if raw is None else raw.decode("latin-1"))
        try:
            body = await read_body(scope, receive, api.max_request_size)
        except ClientDisconnected:
            scope[CLIENT_GONE_KEY] = True
            return
        content_type: bytes | None = None
        metadata: list[tuple[str, str]] = []
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"authorization" and tokens is not None:
                continue
            metadata.append((name.decode("latin-1"), value.decode("latin-1")))
        request = InferenceRequest(
            scope[REQUEST_ID_KEY],
            parse_inputs(content_type, body, api.max_parts, ascii_only=api.ascii_form_values),
            tuple(metadata),
            self.explain,
            params.get("url_path", ""),
            scope[STARTED_KEY],
        )
        stream = _Stream(send)
        watch = api.disconnects.watch(receive)
        scope[MODEL_KEY] = (model, version or "")
        try:
            result = await api.plane.infer(model, version, request, on_intermediate=stream.push)
            scope[MODEL_KEY] = (result.model_name, result.model_version)
        except asyncio.CancelledError:
            stream.abort()
            if not watch.absorb_cancellation():
                raise
            scope[CLIENT_GONE_KEY] = True
            return
        except TorchwickError as error:
            stream.abort()
            if stream.started:
                # The response already started (a stream); the error cannot be sent any more.
                log.warning(
                    "request %s failed after its response started: %s", request.request_id, error
                )
                return
            raise
        finally:
            watch.stop()
        await stream.finish(result)


class _Stream:
    """Turns intermediate results (pushed synchronously by the data plane) into chunks.

    Non-streaming requests pay only for this small object: the writer task is created on the
    first intermediate.
    """

    __slots__ = ("pending", "send", "started", "writer")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = False
        self.pending: deque[InferenceResult] = deque()
        self.writer: asyncio.Task[None] | None = None

    def push(self, result: InferenceResult) -> None:
        self.pending.append(result)
        if self.writer is None:
            self.writer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while self.pending:
            result = self.pending.popleft()
            if not self.started:
                status, content_type, extra = response_head(result)
                headers = list(extra)
                if content_type is not None:
                    headers.append((b"content-type", content_type))
                self.started = True
                await self.send(
                    {"type": "http.response.start", "status": status, "headers": headers}
                )
            await self.send({"type": "http.response.body", "body": result.body, "more_body": True})
        self.writer = None

    def abort(self) -> None:
        """Stop writing chunks (the request failed)."""
        self.pending.clear()
        if self.writer is not None:
            self.writer.cancel()
            self.writer = None

    async def finish(self, final: InferenceResult) -> None:
        """Send the final result: the last chunk of a stream, or the whole answer."""
        while self.writer is not None:
            await self.writer
        if self.started:
            await self.send({"type": "http.response.body", "body": final.body})
            return
        status, content_type, extra = response_head(final)
        await send_response(self.send, status, final.body, content_type, extra)


def response_head(result: InferenceResult) -> tuple[int, bytes | None, RawHeaders]:
    """Status, content type and headers a handler chose, made safe to send."""
    status = result.status
    if not 200 <= status <= 599:
        raise InternalError(f"Handler returned an invalid HTTP status: {status}")
    content_type = result.content_type
    extra: RawHeaders = [(b"x-model-version", result.model_version.encode("utf-8"))]
    for name, value in result.headers:
        lower = name.lower()
        if lower in _RESERVED or not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
            continue
        if lower == "content-type":
            content_type = content_type or value
            continue
        extra.append((lower.encode("latin-1"), value.encode("utf-8")))
    if content_type and _BAD_VALUE.search(content_type):
        content_type = None
    return status, (content_type.encode("utf-8") if content_type else None), extra
