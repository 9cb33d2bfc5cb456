"""Turning ``PredictRequest`` values into handler input, and handler output into bytes.

Input (as TorchServe's Python backend): one dict per request, ``{parameter_name: value}``; a
raw body is the parameter ``body``. With ``decode_input_request`` on, ``application/json``
values are parsed, ``text/*`` values become ``str`` and everything else is a ``bytearray``.
A value that claims to be JSON or text but is not stays a ``bytearray`` (and a debug line is
logged): the handler then decides, and default handlers answer 400 naming the problem.

Output: ``bytes``/``bytearray`` as is, ``str`` as UTF-8, ``torch.Tensor`` as ``torch.save``
bytes, anything else as ``json.dumps(value, indent=2)``. A value that cannot be encoded raises
``UnsupportedOutputError``.
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any

from torchwick.server.errors import BadRequest

from .json_depth import json_too_deep
from .messages import PredictRequest
from .pretty_json import dumps_indent2

#: Content type of an Open Inference Protocol tensor input (``torchwick.server.oip.frames``).
OIP_TENSOR = "application/x-oip-tensor"

logger = logging.getLogger("torchwick.model")


class UnsupportedOutputError(TypeError):
    """A handler returned a value that cannot be serialised for the response."""


def decode_value(
    value: bytes | memoryview,
    content_type: str | None,
    decode: bool,
    max_json_depth: int = 64,
    *,
    buffers: bool = False,
) -> Any:
    """One parameter's value as the handler sees it.

    With ``buffers`` (a handler that declares ``zero_copy_inputs = True``) a value that is not
    parsed as JSON or text is passed on as it arrived, without the ``bytearray`` copy: ``bytes``,
    or a read-only ``memoryview`` of the frontend's shared memory for large values. Such a view
    is valid until the handler returns; a handler that keeps it must copy it.

    JSON nested deeper than ``max_json_depth`` raises ``BadRequest`` (the request alone is
    answered 400); JSON that does not parse is passed on as raw bytes, as in TorchServe.

    An Open Inference Protocol tensor (``application/x-oip-tensor; datatype=..; shape=..``,
    see ``torchwick.server.oip.frames``) is always a numpy array, read-only, whatever
    ``decode`` says; one whose bytes do not fit its shape raises ``InvalidTensor``.
    """
    if content_type is not None and content_type.startswith(OIP_TENSOR):
        from torchwick.server.oip.frames import decode_tensor

        return decode_tensor("input", value, content_type)
    kind = content_type.lower() if decode and content_type is not None else ""
    if buffers and kind != "application/json" and not kind.startswith("text/"):
        return value
    raw = bytearray(value)
    if not kind:
        return raw
    if kind == "application/json":
        if json_too_deep(raw, max_json_depth):
            raise BadRequest(f"JSON input nests deeper than max_json_depth ({max_json_depth})")
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            logger.debug("JSON parameter is not valid JSON; passing the raw bytes on")
            return raw
    if kind.startswith("text/"):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            logger.debug("text parameter is not valid UTF-8; passing the raw bytes on")
            return raw
    return raw


def decode_request(
    request: PredictRequest, decode: bool, max_json_depth: int = 64, *, buffers: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(input_row, request_headers)`` for one request (``BadRequest`` for JSON nested
    deeper than ``max_json_depth``; ``InvalidTensor`` for a malformed OIP tensor).

    The headers map holds the HTTP headers plus, per parameter, ``{name: {"content-type": t}}``
    (TorchServe exposes parameter content types this way). Repeated parameter names: the
    last one wins, as in TorchServe.
    """
    headers: dict[str, Any] = {name.lower(): value for name, value in request.headers}
    row: dict[str, Any] = {}
    for parameter in request.parameters:
        if parameter.content_type is not None and parameter.content_type.startswith(OIP_TENSOR):
            from torchwick.server.oip.frames import decode_tensor

            row[parameter.name] = decode_tensor(
                parameter.name, parameter.value, parameter.content_type
            )
        else:
            row[parameter.name] = decode_value(
                parameter.value, parameter.content_type, decode, max_json_depth, buffers=buffers
            )
        headers[parameter.name] = {"content-type": parameter.content_type}
    return row, headers


def encode_output(value: Any) -> bytes:
    """The response body for one handler result."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    import torch

    if isinstance(value, torch.Tensor):
        buffer = io.BytesIO()
        torch.save(value.detach().cpu(), buffer)
        return buffer.getvalue()
    try:
        return dumps_indent2(value).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise UnsupportedOutputError(
            f"Unsupported model output data type: {type(value).__name__} ({exc})"
        ) from exc


def error_body(code: int, type_name: str, message: str) -> bytes:
    """The ``{"code","type","message"}`` JSON error body, pretty-printed like the frontend's."""
    text = json.dumps({"code": code, "type": type_name, "message": message}, indent=2)
    return (text + "\n").encode("utf-8")
