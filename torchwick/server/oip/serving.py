"""The Open Inference Protocol on the data plane: what the REST and gRPC adapters share.

``OipService`` turns a decoded ``InferRequest`` into an ``InferenceRequest`` (one tensor input
per OIP input, see ``frames.py``), runs it through the data plane like any other inference
(same queue, batching, auth, accounting and errors), and turns the worker's tensor answer
into an ``InferResponse`` holding exactly the requested outputs. Health and metadata come from
the data plane too, so both transports answer the same.

Failure modes: every failure is a ``TorchwickError`` (a handler's own error status becomes the
table's error for that status, with the handler's message); the adapters map it through the
one error table.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torchwick
from torchwick.handlers.messages import InputParameter
from torchwick.server.contracts import (
    InferenceRequest,
    InferenceResult,
    ModelMetadata,
    TensorSpec,
)
from torchwick.server.errors import (
    InternalError,
    InvalidTensor,
    TorchwickError,
    error_class_for_http,
)

from .tensors import InferRequest, InferResponse

SERVER_NAME = "torchwick"
#: The protocol extensions torchwick implements (reported by server metadata).
EXTENSIONS: tuple[str, ...] = ("binary_tensor_data",)


class OipPlane(Protocol):
    """The part of the data plane the OIP adapters use (``DataPlane``)."""

    async def infer(
        self,
        model: str,
        version: str | None,
        request: InferenceRequest,
        *,
        on_intermediate: Callable[[InferenceResult], None] | None = None,
    ) -> InferenceResult: ...
    def ready(self) -> bool: ...
    def model_ready(self, model: str, version: str | None = None) -> bool: ...
    def metadata(self, model: str, version: str | None = None) -> ModelMetadata: ...


@dataclass(frozen=True, slots=True)
class ServerMetadata:
    """``GET /v2`` and ``ServerMetadata``."""

    name: str
    version: str
    extensions: tuple[str, ...]


class OipService:
    """The protocol's operations over one data plane (see the module docs)."""

    def __init__(self, plane: OipPlane) -> None:
        self.plane = plane

    @staticmethod
    def live() -> bool:
        """The server process answers (always true once it does)."""
        return True

    def ready(self) -> bool:
        """Startup models tried and every default version healthy."""
        return self.plane.ready()

    def model_ready(self, model: str, version: str | None) -> bool:
        """The version has a ready worker (404s for unknown names)."""
        return self.plane.model_ready(model, version or None)

    @staticmethod
    def server_metadata() -> ServerMetadata:
        """Name, version and extensions."""
        return ServerMetadata(SERVER_NAME, getattr(torchwick, "__version__", "0.1.0"), EXTENSIONS)

    def model_metadata(self, model: str, version: str | None) -> ModelMetadata:
        """The model's versions, platform and declared tensors."""
        return self.plane.metadata(model, version or None)

    async def infer(
        self,
        model: str,
        version: str | None,
        request: InferRequest,
        *,
        request_id: str,
        metadata: Sequence[tuple[str, str]] = (),
        received_at: float = 0.0,
    ) -> InferResponse:
        """Run one infer request; the response echoes the request's ``id``.

        When the model declares its inputs (model-config ``metadata.inputs``), the request is
        checked against them before it is queued: an unknown or missing input, another
        datatype, or a shape that differs where the declaration is not ``-1`` is an
        ``InvalidTensor`` naming the tensor (400), and the worker never sees it.
        """
        # The numpy codecs are imported on the first infer, not at server start (numpy is
        # about a tenth of the frontend's start-up).
        from .datatypes import raw_from_array
        from .frames import OIP_MARKER, OUTPUTS_CONTENT_TYPE, decode_outputs, tensor_content_type
        from .outputs import build_infer_response

        check_declared(self.plane.metadata(model, version or None).inputs, request)
        inputs = tuple(
            InputParameter(
                tensor.name,
                raw_from_array(tensor.data, tensor.datatype),
                tensor_content_type(tensor.datatype, tensor.shape),
            )
            for tensor in request.inputs
        )
        call = InferenceRequest(
            request_id,
            inputs,
            (*metadata, (OIP_MARKER, "1")),
            received_at=received_at,
        )
        result = await self.plane.infer(model, version or None, call)
        if result.status >= 400:
            raise _handler_error(result)
        if result.content_type != OUTPUTS_CONTENT_TYPE:
            raise InternalError(
                "the model did not answer in tensors (content type "
                f"{result.content_type!r}); see the model log"
            )
        header_length = _header_length(result)
        produced: dict[str, Any] = {
            o.name: o.array for o in decode_outputs(result.body, header_length)
        }
        return build_infer_response(
            produced, request, model_name=result.model_name, model_version=result.model_version
        )


def check_declared(declared: Sequence[TensorSpec], request: InferRequest) -> None:
    """Refuse inputs that contradict the declared ones (no declaration: anything goes)."""
    if not declared:
        return
    wanted = {spec.name: spec for spec in declared}
    for tensor in request.inputs:
        spec = wanted.get(tensor.name)
        if spec is None:
            known = ", ".join(wanted)
            raise InvalidTensor(tensor.name, f"the model has no such input (inputs: {known})")
        if tensor.datatype != spec.datatype:
            raise InvalidTensor(
                tensor.name, f"datatype {tensor.datatype} given, the model takes {spec.datatype}"
            )
        fits = len(tensor.shape) == len(spec.shape) and all(
            want in (-1, got) for want, got in zip(spec.shape, tensor.shape, strict=True)
        )
        if not fits:
            raise InvalidTensor(
                tensor.name,
                f"shape {list(tensor.shape)} given, the model takes {list(spec.shape)}",
            )
    given = {tensor.name for tensor in request.inputs}
    missing = [name for name in wanted if name not in given]
    if missing:
        raise InvalidTensor(missing[0], "missing: the model needs this input")


def _header_length(result: InferenceResult) -> int:
    from .frames import HEADER_LENGTH

    for name, value in result.headers:
        if name.lower() == HEADER_LENGTH:
            try:
                return int(value)
            except ValueError:
                break
    raise InternalError("the worker's tensor answer has no valid header length")


def _handler_error(result: InferenceResult) -> TorchwickError:
    """A handler's error answer as the table's error for its status, with its message."""
    message = result.reason
    try:
        document = json.loads(result.body)
        if isinstance(document, dict) and isinstance(document.get("message"), str):
            message = document["message"]
    except (ValueError, UnicodeDecodeError):
        pass
    error = error_class_for_http(result.status)(message or f"status {result.status}")
    return error
