"""Typed errors of the server and the one table that maps them to HTTP and gRPC status.

Every layer raises one of these; every adapter (REST, gRPC, OIP) looks the type up in
``ERROR_TABLE`` (never the message text) to answer, and a bare status that a worker or a
handler chose is answered from the same table (``status_for_http``); there is no second
table. ``type_name`` is the value of the ``type`` field in TorchServe's error JSON, kept so
that clients matching on it still work.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ErrorStatus:
    """How one error type is answered: HTTP status, TorchServe ``type`` and gRPC code name."""

    http_status: int
    type_name: str
    grpc_code: str


class TorchwickError(Exception):
    """Base of every error the server answers with a status. ``message`` is client-facing."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def status(self) -> ErrorStatus:
        """The answer for this error, from the first matching class in its MRO."""
        for cls in type(self).__mro__:
            found = ERROR_TABLE.get(cls)
            if found is not None:
                return found
        return ERROR_TABLE[TorchwickError]


class BadRequest(TorchwickError):
    """Malformed input: a bad parameter, body or archive option."""


class InvalidToken(TorchwickError):
    """Missing, wrong or expired bearer token (401: our one deliberate difference)."""


class ForbiddenOperation(TorchwickError):
    """A valid request that is not permitted in the current state (403)."""


class ResourceNotFound(TorchwickError):
    """No such route."""


class ModelNotFound(TorchwickError):
    """No model of that name is registered, or the archive does not exist."""


class ModelVersionNotFound(TorchwickError):
    """The model exists but not in that version."""


class MethodNotAllowed(TorchwickError):
    """The route exists but not for this method, or the model API is disabled."""


class RequestTimeout(TorchwickError):
    """A management operation did not finish in time (for example unregister)."""


class RequestHeadTimeout(RequestTimeout):
    """A connection did not send a complete request head within ``request_head_timeout_s``."""


class HeadersTooLarge(TorchwickError):
    """Request headers over ``max_header_size`` bytes or ``max_header_count`` lines (431)."""


class Conflict(TorchwickError):
    """The model name and version are already registered."""


class PayloadTooLarge(TorchwickError):
    """The request body is larger than ``max_request_size``."""


class ServiceUnavailable(TorchwickError):
    """No worker can take the request, or the model's job queue is full."""


class QueueFull(ServiceUnavailable):
    """The model version's job queue holds ``job_queue_size`` requests already (503)."""


class Overloaded(ServiceUnavailable):
    """The server holds ``max_inflight_requests`` requests or ``max_connections``
    connections already (503)."""


class InternalError(TorchwickError):
    """An unexpected server-side failure."""


class WorkerDied(InternalError):
    """The worker process running the request exited or stopped answering."""


class ModelLoadFailed(InternalError):
    """Workers for a model could not be started or could not load the model."""


class ResponseTimeout(TorchwickError):
    """The worker did not answer within the model's ``response_timeout`` (504)."""


class OutOfResources(TorchwickError):
    """Memory (host or device) ran out while serving the request (507)."""


class InvalidArchive(BadRequest):
    """The archive cannot be read or breaks a safety rule."""


class DownloadFailed(BadRequest):
    """The archive URL could not be fetched."""


# Open Inference Protocol (KServe v2) request errors.


class InvalidInferRequest(BadRequest):
    """An OIP infer request that cannot be decoded: bad JSON header, binary framing, fields."""


class InvalidTensor(InvalidInferRequest):
    """One named input or output tensor is wrong: datatype, shape, data or parameters.

    ``role`` is ``"input"`` or ``"output"``; ``tensor`` is the tensor's name and
    ``problem`` says what was wrong, so adapters can report both without parsing text.
    """

    def __init__(self, tensor: str, problem: str, *, role: str = "input") -> None:
        super().__init__(f"{role} '{tensor}': {problem}")
        self.tensor = tensor
        self.problem = problem
        self.role = role


class UnknownOutput(InvalidTensor):
    """The request asks for an output the model did not produce."""

    def __init__(self, tensor: str, available: tuple[str, ...]) -> None:
        listed = ", ".join(available) if available else "none"
        super().__init__(tensor, f"not produced by the model (outputs: {listed})", role="output")
        self.available = available


ERROR_TABLE: dict[type[TorchwickError], ErrorStatus] = {
    TorchwickError: ErrorStatus(500, "InternalServerException", "INTERNAL"),
    BadRequest: ErrorStatus(400, "BadRequestException", "INVALID_ARGUMENT"),
    InvalidArchive: ErrorStatus(400, "InvalidModelException", "INVALID_ARGUMENT"),
    DownloadFailed: ErrorStatus(400, "DownloadArchiveException", "INVALID_ARGUMENT"),
    InvalidToken: ErrorStatus(401, "InvalidKeyException", "UNAUTHENTICATED"),
    ForbiddenOperation: ErrorStatus(403, "InvalidModelVersionException", "PERMISSION_DENIED"),
    ResourceNotFound: ErrorStatus(404, "ResourceNotFoundException", "NOT_FOUND"),
    ModelNotFound: ErrorStatus(404, "ModelNotFoundException", "NOT_FOUND"),
    ModelVersionNotFound: ErrorStatus(404, "ModelVersionNotFoundException", "NOT_FOUND"),
    MethodNotAllowed: ErrorStatus(405, "MethodNotAllowedException", "PERMISSION_DENIED"),
    RequestTimeout: ErrorStatus(408, "RequestTimeoutException", "DEADLINE_EXCEEDED"),
    RequestHeadTimeout: ErrorStatus(408, "RequestTimeoutException", "DEADLINE_EXCEEDED"),
    HeadersTooLarge: ErrorStatus(431, "RequestHeaderFieldsTooLargeException", "RESOURCE_EXHAUSTED"),
    Conflict: ErrorStatus(409, "ConflictStatusException", "ALREADY_EXISTS"),
    PayloadTooLarge: ErrorStatus(413, "PayloadTooLargeException", "RESOURCE_EXHAUSTED"),
    InternalError: ErrorStatus(500, "InternalServerException", "INTERNAL"),
    WorkerDied: ErrorStatus(500, "InternalServerException", "INTERNAL"),
    ModelLoadFailed: ErrorStatus(500, "InternalServerException", "INTERNAL"),
    ServiceUnavailable: ErrorStatus(503, "ServiceUnavailableException", "UNAVAILABLE"),
    QueueFull: ErrorStatus(503, "ServiceUnavailableException", "UNAVAILABLE"),
    Overloaded: ErrorStatus(503, "ServiceUnavailableException", "UNAVAILABLE"),
    ResponseTimeout: ErrorStatus(504, "ResponseTimeoutException", "DEADLINE_EXCEEDED"),
    OutOfResources: ErrorStatus(507, "OutOfResourcesException", "RESOURCE_EXHAUSTED"),
    InvalidInferRequest: ErrorStatus(400, "BadRequestException", "INVALID_ARGUMENT"),
    InvalidTensor: ErrorStatus(400, "BadRequestException", "INVALID_ARGUMENT"),
    UnknownOutput: ErrorStatus(400, "BadRequestException", "INVALID_ARGUMENT"),
}


#: The class that answers a bare HTTP status (a worker-side failure, a handler's chosen
#: status): the first class in ``ERROR_TABLE`` with that status.
_BY_HTTP: dict[int, type[TorchwickError]] = {}
for _cls, _status in ERROR_TABLE.items():
    if _cls is not TorchwickError:  # the base is the fallback, never the meaning of a status
        _BY_HTTP.setdefault(_status.http_status, _cls)


def error_class_for_http(status: int) -> type[TorchwickError]:
    """The error type a bare HTTP status stands for (``error_class_for_http(507)`` is
    ``OutOfResources``); an unlisted 4xx is ``BadRequest``, anything else ``InternalError``."""
    found = _BY_HTTP.get(status)
    if found is not None:
        return found
    return BadRequest if 400 <= status < 500 else InternalError


def status_for_http(status: int) -> ErrorStatus:
    """The table's answer for a bare HTTP status, keeping that status (a handler that chose
    418 answers 418, with ``BadRequest``'s type name and gRPC code)."""
    found = ERROR_TABLE[error_class_for_http(status)]
    if found.http_status == status:
        return found
    return ErrorStatus(status, found.type_name, found.grpc_code)


def grpc_code_for_http(status: int) -> str:
    """gRPC code name for an HTTP status: ``OK`` for 2xx, else the table's code."""
    if 200 <= status < 300:
        return "OK"
    return status_for_http(status).grpc_code


#: The HTTP status a gRPC code stands for: the first class in ``ERROR_TABLE`` with that code.
_HTTP_BY_GRPC: dict[str, int] = {"OK": 200, "CANCELLED": 499}
for _cls, _status in ERROR_TABLE.items():
    if _cls is not TorchwickError:
        _HTTP_BY_GRPC.setdefault(_status.grpc_code, _status.http_status)


def http_status_for_grpc(code: str) -> int:
    """HTTP status for a gRPC code name that no typed error produced (``OK`` 200,
    ``CANCELLED`` 499 like a client that left, else the table's first status with that code,
    else 500)."""
    return _HTTP_BY_GRPC.get(code, 500)
