"""The REST inference API: ``/ping``, ``/predictions/...`` and ``/explanations/...``.

How a request becomes handler input (TorchServe's rules): every HTTP header, name lower-cased,
goes into ``PredictRequest.headers`` together with ``explain`` (``True`` for explanations,
``False`` for predictions) and ``url_path`` (extra path segments after the version, joined by
``/``; ``""`` when none). The body becomes parameters as ``inputs.parse_inputs`` describes.
The query string is ignored, as in TorchServe. When token authorization is on, the
``Authorization`` header (the server's own credential) is not passed to the handler.

The answer is the handler's: its status, content type (none at all unless it set one),
headers and body. Intermediate responses (``send_intermediate_predict_response``) start a
chunked response at the first one; the final response is the last chunk.

If the client disconnects while its request is queued or running, the data plane call is
cancelled within ~20 ms (``disconnect.py``); a still-queued request never reaches a worker.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Callable

from torchwick.handlers.messages import PredictRequest, PredictResponse
from torchwick.server.errors import InternalError, ModelNotFound, ModelVersionNotFound
from torchwick.server.observability.metrics import FrontendMetrics

from .asgi import JSON_CONTENT_TYPE, ClientDisconnected, RawHeaders, Request, json_bytes
from .disconnect import DisconnectMonitor
from .inputs import parse_inputs
from .openapi import describe_model
from .ports import InferencePlane
from .router import ANY_METHOD, Operation, Parameter, Route

log = logging.getLogger(__name__)

_HEALTHY = json_bytes({"status": "Healthy"})
_UNHEALTHY = json_bytes({"status": "Unhealthy"})
#: Response headers the server owns; a handler cannot set these.
_RESERVED = frozenset({"content-length", "transfer-encoding", "connection", "x-request-id"})
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

_MODEL = Parameter("model_name", "path", "Name of the model.")
_VERSION = Parameter("model_version", "path", "Version of the model.")
_EXTRA = Parameter("url_path", "path", "Extra path passed to the handler as header url_path.")
_INFER_RESPONSES = (
    (200, "The handler's answer (status, content type and body are the handler's)."),
    (400, "Bad input."),
    (401, "Missing or wrong inference token."),
    (404, "Model or version not found."),
    (413, "Request body larger than max_request_size."),
    (500, "Worker died, or internal error."),
    (503, "No worker available, or the model's queue is full."),
    (504, "The worker did not answer within response_timeout."),
    (507, "Out of memory."),
)
_BODY_TYPES = ("application/json", "multipart/form-data", "application/octet-stream", "*/*")


class InferenceApi:
    """Endpoints of the inference listener; ``routes()`` lists them for the router."""

    def __init__(
        self,
        plane: InferencePlane,
        metrics: FrontendMetrics,
        *,
        max_request_size: int,
        forward_authorization: bool,
        startup_done: Callable[[], bool],
        title: str = "torchwick inference API",
    ) -> None:
        self.plane = plane
        self.metrics = metrics
        self.max_request_size = max_request_size
        self.forward_authorization = forward_authorization
        self.startup_done = startup_done
        self.title = title
        self.disconnects = DisconnectMonitor()
        self._routes: list[Route] = []

    def routes(self) -> list[Route]:
        """The inference routes (``/ping`` needs no token: health checks carry none)."""
        if self._routes:
            return self._routes
        ping_doc = Operation(
            "ping",
            "Health: 200 Healthy, or 500 Unhealthy while any model lacks its minimum workers.",
            responses=((200, "Healthy"), (500, "Unhealthy")),
        )
        routes = [Route.make("/ping", {ANY_METHOD: self.ping}, "none", {"GET": ping_doc})]
        for kind, explain in (("predictions", False), ("explanations", True)):
            endpoint = self._predict if not explain else self._explain
            shapes = (
                (f"/{kind}/{{model_name}}", (_MODEL,)),
                (f"/{kind}/{{model_name}}/{{model_version}}", (_MODEL, _VERSION)),
                (
                    f"/{kind}/{{model_name}}/{{model_version}}/{{url_path...}}",
                    (_MODEL, _VERSION, _EXTRA),
                ),
            )
            for pattern, params in shapes:
                doc = Operation(
                    f"{kind}_{len(params)}",
                    f"{'Explanations' if explain else 'Predictions'} from the model "
                    "(any method but OPTIONS; OPTIONS returns this model's API).",
                    params,
                    request_body=_BODY_TYPES,
                    responses=_INFER_RESPONSES,
                    response_media=None,
                )
                endpoints = {ANY_METHOD: endpoint, "OPTIONS": self._model_api}
                routes.append(Route.make(pattern, endpoints, "inference", {ANY_METHOD: doc}))
        self._routes = routes
        return routes

    # -- endpoints ---------------------------------------------------------------------------

    async def ping(self, request: Request) -> None:
        """``/ping``: Healthy only once startup models are loaded and all models are healthy."""
        if self.startup_done() and self.plane.healthy():
            await request.respond(200, _HEALTHY, JSON_CONTENT_TYPE)
        else:
            await request.respond(500, _UNHEALTHY, JSON_CONTENT_TYPE)

    async def _model_api(self, request: Request) -> None:
        model = request.params["model_name"]
        self.plane.describe(model, request.params.get("model_version"))  # 404s if unknown
        kind = request.path.strip("/").split("/", 1)[0]
        document = describe_model(self.title, self.routes(), f"/{kind}/{{model_name}}", model)
        await request.respond_json(200, document)

    async def _predict(self, request: Request) -> None:
        await self._infer(request, "False")

    async def _explain(self, request: Request) -> None:
        await self._infer(request, "True")

    async def _infer(self, request: Request, explain: str) -> None:
        params = request.params
        model = params["model_name"]
        version = params.get("model_version")
        body = await request.read_body(self.max_request_size)
        content_type: bytes | None = None
        headers: list[tuple[str, str]] = []
        for name, value in request.scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"authorization" and not self.forward_authorization:
                continue
            headers.append((name.decode("latin-1"), value.decode("latin-1")))
        headers.append(("explain", explain))
        headers.append(("url_path", params.get("url_path", "")))
        predict = PredictRequest(
            request.request_id, tuple(headers), parse_inputs(content_type, body)
        )

        stream = _Stream(request)
        watch = self.disconnects.watch(request.receive)
        counted = True
        try:
            response = await self.plane.infer(model, version, predict, on_intermediate=stream.push)
        except asyncio.CancelledError:
            stream.abort()
            if not watch.disconnected:
                raise
            # Our own cancellation (the client left): absorb it and end quietly.
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            raise ClientDisconnected from None
        except (ModelNotFound, ModelVersionNotFound):
            # Unknown names are client-chosen: counting them would let clients mint series.
            counted = False
            raise
        except BaseException:
            stream.abort()
            raise
        finally:
            watch.stop()
            if counted:
                elapsed_us = int((time.perf_counter() - request.started) * 1_000_000)
                self.metrics.observe_inference(model, version, elapsed_us)
        await stream.finish(response)


class _Stream:
    """Turns intermediate responses (pushed synchronously by the data plane) into chunks.

    Non-streaming requests pay only for this small object: the writer task is created on the
    first intermediate.
    """

    __slots__ = ("pending", "request", "writer")

    def __init__(self, request: Request) -> None:
        self.request = request
        self.pending: deque[PredictResponse] = deque()
        self.writer: asyncio.Task[None] | None = None

    def push(self, response: PredictResponse) -> None:
        self.pending.append(response)
        if self.writer is None:
            self.writer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        request = self.request
        while self.pending:
            response = self.pending.popleft()
            if not request.status:
                status, content_type, extra = _response_head(response)
                await request.start_stream(status, content_type, extra)
            await request.stream_chunk(response.body, last=False)
        self.writer = None

    def abort(self) -> None:
        """Stop writing chunks (the request failed; the listener ends the response)."""
        self.pending.clear()
        if self.writer is not None:
            self.writer.cancel()
            self.writer = None

    async def finish(self, final: PredictResponse) -> None:
        """Send the final response: the last chunk of a stream, or the whole answer."""
        while self.writer is not None:
            await self.writer
        request = self.request
        if request.status:
            await request.stream_chunk(final.body, last=True)
            return
        status, content_type, extra = _response_head(final)
        await request.respond(status, final.body, content_type, extra)


def _response_head(response: PredictResponse) -> tuple[int, bytes | None, RawHeaders]:
    """Status, content type and headers a handler chose, made safe to send."""
    status = response.status
    if not 200 <= status <= 599:
        raise InternalError(f"Handler returned an invalid HTTP status: {status}")
    content_type = response.content_type
    extra: RawHeaders = []
    for name, value in response.headers:
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
