"""gRPC status codes for torchwick's errors, from the one ``ERROR_TABLE``.

Every gRPC adapter answers a ``TorchwickError`` with ``grpc.StatusCode[error.status.grpc_code]``
and the error's client-facing message as the details, and a handler's chosen non-2xx status
with ``errors.grpc_code_for_http(status)``. Nothing here branches on message text.

``StreamPredictions2`` reports a failed request inside the stream (TorchServe's behaviour):
``rpc_status`` builds the ``google.rpc.Status`` for ``PredictionResponse.status``, with one
``google.rpc.ErrorInfo`` detail whose ``reason`` is TorchServe's error type name.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from torchwick.server.contracts import InferenceResult
from torchwick.server.errors import TorchwickError, grpc_code_for_http, status_for_http
from torchwick.server.observability.served import ANSWERED

#: Longest details text sent for a handler's error answer: details travel in the trailers,
#: whose size clients limit (8 KiB by default), so a large error body is cut here.
MAX_DETAILS_CHARS = 4096


def code_for(error: TorchwickError) -> grpc.StatusCode:
    """The gRPC code of ``error``'s type (its HTTP status is noted for the access log)."""
    ANSWERED.set(error.status.http_status)
    return grpc.StatusCode[error.status.grpc_code]


def result_error(result: InferenceResult) -> tuple[grpc.StatusCode, str, str] | None:
    """``(code, details, type name)`` when the handler answered a non-2xx status, else None.

    The details are the handler's body (UTF-8, replacement characters for bad bytes), or its
    reason phrase when the body is empty, cut to ``MAX_DETAILS_CHARS``.
    """
    name = grpc_code_for_http(result.status)
    if name == "OK":
        return None
    ANSWERED.set(result.status)
    details = result.body.decode("utf-8", "replace") if result.body else result.reason
    if not details:
        details = f"Handler answered status {result.status}"
    return (
        grpc.StatusCode[name],
        details[:MAX_DETAILS_CHARS],
        status_for_http(result.status).type_name,
    )


def rpc_status(code: grpc.StatusCode, message: str, type_name: str) -> Any:
    """A ``google.rpc.Status`` for an in-stream error (``code.value[0]`` is the number)."""
    status = status_pb2.Status(code=code.value[0], message=message)
    status.details.add().Pack(error_details_pb2.ErrorInfo(reason=type_name))
    return status


def error_status(error: TorchwickError) -> Any:
    """``rpc_status`` for a ``TorchwickError``."""
    return rpc_status(code_for(error), error.message, error.status.type_name)
