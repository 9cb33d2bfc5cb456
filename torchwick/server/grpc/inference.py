"""TorchServe's gRPC inference API (``InferenceAPIsService``) over the data plane.

How a ``PredictionsRequest`` becomes an ``InferenceRequest`` (TorchServe 0.12's rules):
``model_name`` is required (``INVALID_ARGUMENT`` when empty); an empty ``model_version``
selects the default version; each ``input`` map entry becomes one input parameter of that
name with its bytes and no content type (so a handler reads ``row["data"]`` for the input
named ``data``). Call metadata with text values becomes request metadata, so a handler sees
it as request headers; the ``authorization`` key is not passed on while token authorization
is on, and binary (``-bin``) metadata is not passed on.

Answers: ``PredictionResponse.prediction`` carries the handler's body. A handler that chose a
non-2xx status fails the call with ``errors.grpc_code_for_http(status)`` and the body as the
details (TorchServe sends such a body as a successful prediction; torchwick keeps the
handler's meaning). Data plane errors fail the call with their table code.

Streaming: ``StreamPredictions`` sends one message per intermediate response, then the final
one. ``StreamPredictions2`` answers each incoming request in order, one at a time (its
intermediate responses first, then its final one). A failed request in it is answered with a
message whose ``status`` holds the error (TorchServe's behaviour) and the stream stays open.
``sequence_id`` is echoed on every answer of ``StreamPredictions2`` and passed to the handler
as the ``ts_request_sequence_id`` header; torchwick has no sequence (stateful) batching, so the
requests of one stream may run on any worker. ``Predictions`` and ``StreamPredictions``
ignore ``sequence_id``, as TorchServe does.

A client that cancels a call (or whose deadline passes) cancels the data plane call: a queued
request is removed before it runs, so its worker and queue slot are free for the next one.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

from google.protobuf import empty_pb2
from grpc import aio

from torchwick.handlers.messages import InputParameter
from torchwick.server.api.responses import new_request_id
from torchwick.server.contracts import InferencePort, InferenceRequest, InferenceResult
from torchwick.server.errors import BadRequest, TorchwickError

from ._generated import inference_pb2, inference_pb2_grpc
from .status import code_for, error_status, result_error, rpc_status

#: The handler header that carries ``sequence_id`` (TorchServe's default header key).
SEQUENCE_ID_HEADER = "ts_request_sequence_id"

Context = aio.ServicerContext[Any, Any]
IntermediateSink = Any  # Callable[[InferenceResult], None]


#: The part of the data plane this servicer uses.
GrpcInferencePlane = InferencePort


def health_text(ready: bool) -> str:
    """TorchServe's health JSON: ``{"status": "Healthy"}`` or ``"Unhealthy"``, pretty-printed
    as REST ``/ping`` prints it (without the trailing newline, as TorchServe's gRPC does)."""
    return json.dumps({"status": "Healthy" if ready else "Unhealthy"}, indent=2)


class InferenceServicer(inference_pb2_grpc.InferenceAPIsServiceServicer):
    """``Ping``, ``Predictions``, ``StreamPredictions`` and ``StreamPredictions2``.

    ``strip_authorization``: drop the ``authorization`` metadata before the handler sees it
    (True while token authorization is on: it is the server's credential).
    """

    def __init__(self, plane: GrpcInferencePlane, *, strip_authorization: bool) -> None:
        self.plane = plane
        self.strip_authorization = strip_authorization

    async def Ping(  # noqa: N802 - gRPC method names
        self, request: empty_pb2.Empty, context: Context
    ) -> inference_pb2.TorchServeHealthResponse:
        """Always OK; the health text says Healthy or Unhealthy (TorchServe's behaviour)."""
        return inference_pb2.TorchServeHealthResponse(health=health_text(self.plane.ready()))

    async def Predictions(  # noqa: N802
        self, request: inference_pb2.PredictionsRequest, context: Context
    ) -> inference_pb2.PredictionResponse:
        try:
            model, version, call = self._request(request, context, stream=False)
            result = await self.plane.infer(model, version, call)
        except TorchwickError as error:
            await context.abort(code_for(error), error.message)
        failed = result_error(result)
        if failed is not None:
            await context.abort(failed[0], failed[1])
        return inference_pb2.PredictionResponse(prediction=result.body)

    async def StreamPredictions(  # noqa: N802
        self, request: inference_pb2.PredictionsRequest, context: Context
    ) -> AsyncIterator[inference_pb2.PredictionResponse]:
        try:
            model, version, call = self._request(request, context, stream=False)
        except TorchwickError as error:
            await context.abort(code_for(error), error.message)
        async with aclosing(_streamed(self.plane, model, version, call)) as results:
            async for result in results:
                if isinstance(result, TorchwickError):
                    await context.abort(code_for(result), result.message)
                failed = result_error(result)
                if failed is not None:
                    await context.abort(failed[0], failed[1])
                yield inference_pb2.PredictionResponse(prediction=result.body)

    async def StreamPredictions2(  # noqa: N802
        self, request_iterator: Any, context: Context
    ) -> AsyncIterator[inference_pb2.PredictionResponse]:
        async for request in request_iterator:
            sequence = request.sequence_id if request.HasField("sequence_id") else None
            try:
                model, version, call = self._request(request, context, stream=True)
            except TorchwickError as error:
                yield _answer(sequence, status=error_status(error))
                continue
            async with aclosing(_streamed(self.plane, model, version, call)) as results:
                async for result in results:
                    if isinstance(result, TorchwickError):
                        yield _answer(sequence, status=error_status(result))
                        break
                    failed = result_error(result)
                    if failed is not None:
                        yield _answer(sequence, status=rpc_status(*failed))
                        break
                    yield _answer(sequence, prediction=result.body)

    def _request(
        self, request: inference_pb2.PredictionsRequest, context: Context, *, stream: bool
    ) -> tuple[str, str | None, InferenceRequest]:
        received = time.perf_counter()
        if not request.model_name:
            raise BadRequest("Parameter model_name is required.")
        metadata: list[tuple[str, str]] = []
        for key, value in context.invocation_metadata() or ():
            if not isinstance(value, str):
                continue
            if key == "authorization" and self.strip_authorization:
                continue
            metadata.append((key, value))
        if stream and request.HasField("sequence_id"):
            metadata.append((SEQUENCE_ID_HEADER, request.sequence_id))
        inputs = tuple(InputParameter(name, value) for name, value in request.input.items())
        call = InferenceRequest(new_request_id(), inputs, tuple(metadata), received_at=received)
        return request.model_name, request.model_version or None, call


def _answer(
    sequence: str | None, *, prediction: bytes = b"", status: Any = None
) -> inference_pb2.PredictionResponse:
    answer = inference_pb2.PredictionResponse(prediction=prediction)
    if sequence is not None:
        answer.sequence_id = sequence
    if status is not None:
        answer.status.CopyFrom(status)
    return answer


_DONE = object()


async def _streamed(
    plane: GrpcInferencePlane, model: str, version: str | None, request: InferenceRequest
) -> AsyncGenerator[InferenceResult | TorchwickError, None]:
    """The intermediate results of one call as they arrive, then its final result (or the
    ``TorchwickError`` it raised). Closing the iterator early (the client cancelled) cancels
    the data plane call."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    task = asyncio.ensure_future(
        plane.infer(model, version, request, on_intermediate=queue.put_nowait)
    )
    task.add_done_callback(lambda _: queue.put_nowait(_DONE))
    try:
        while (item := await queue.get()) is not _DONE:
            yield item
        try:
            final = task.result()
        except TorchwickError as error:
            yield error
        else:
            yield final
    finally:
        if not task.done():
            task.cancel()
            # Retrieve the outcome later so a cancelled call is never reported as unretrieved.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
