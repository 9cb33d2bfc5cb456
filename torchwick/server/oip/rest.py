"""REST codec of the Open Inference Protocol: the JSON tensor format and the binary extension.

Request body: a JSON object ``{"id"?, "parameters"?, "inputs": [...], "outputs"?: [...]}``.
With the binary tensor data extension the body is that JSON header followed by raw tensor
blobs; the header's byte length comes in the ``Inference-Header-Content-Length`` HTTP
header and each binary input carries ``parameters.binary_data_size``. Blobs follow in the
order of the inputs that declare one (raw layout: :mod:`.datatypes`).

Response body: JSON outputs carry ``data``; binary outputs carry
``parameters.binary_data_size`` and their bytes follow the JSON header, which is then
announced by the same HTTP header. This is what ``tritonclient.http`` writes and reads.

Every malformed request raises :class:`~torchwick.server.errors.InvalidInferRequest` or its
subclass :class:`~torchwick.server.errors.InvalidTensor` (both 400 / INVALID_ARGUMENT);
nothing here allocates more than the body's own size for a declared size or shape.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torchwick.server.errors import InvalidInferRequest, InvalidTensor

from .datatypes import DATATYPES, array_from_raw, check_shape, raw_from_array
from .json_tensors import array_from_json, json_from_array
from .tensors import (
    InferRequest,
    InferResponse,
    InputTensor,
    Parameters,
    ParameterValue,
    RequestedOutput,
    frozen_parameters,
)

#: HTTP header carrying the JSON header's length when binary tensor data follows it.
HEADER_LENGTH = "Inference-Header-Content-Length"
JSON_CONTENT_TYPE = "application/json"
BINARY_CONTENT_TYPE = "application/octet-stream"

#: Extensions of Triton's binary protocol this codec refuses rather than ignores.
_UNSUPPORTED_INPUT_PARAMETERS = ("shared_memory_region", "shared_memory_byte_size")
_UNSUPPORTED_OUTPUT_PARAMETERS = ("classification", "shared_memory_region")


def parse_header_length(value: str | None, body_length: int) -> int | None:
    """The ``Inference-Header-Content-Length`` value, validated against the body length.

    ``None`` when the header is absent (the whole body is JSON). Raises
    InvalidInferRequest when it is not a decimal integer or exceeds the body.
    """
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit() or not text.isascii():
        raise InvalidInferRequest(f"{HEADER_LENGTH} must be a non-negative integer, got {value!r}")
    length = int(text)
    if length > body_length:
        raise InvalidInferRequest(
            f"{HEADER_LENGTH} is {length} but the body has only {body_length} bytes"
        )
    return length


def decode_infer_request(body: bytes, header_length: int | None = None) -> InferRequest:
    """Decode a REST infer request body (see the module docstring).

    ``header_length`` is :func:`parse_header_length`'s result. Raises InvalidInferRequest
    for a malformed JSON header or framing, InvalidTensor for a bad input or output.
    """
    view = memoryview(body)
    json_end = len(view) if header_length is None else header_length
    if json_end > len(view):
        raise InvalidInferRequest(
            f"{HEADER_LENGTH} {json_end} exceeds the body ({len(view)} bytes)"
        )
    document = _load_json(view[:json_end])
    if not isinstance(document, dict):
        raise InvalidInferRequest("the request body must be a JSON object")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInferRequest("'id' must be a string")
    parameters = _parameters(document.get("parameters"), "request")
    raw_inputs = document.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInferRequest("'inputs' must be a non-empty list")

    offset = json_end
    inputs: list[InputTensor] = []
    for index, raw in enumerate(raw_inputs):
        tensor, offset = _input(raw, index, view, offset, binary_allowed=header_length is not None)
        if any(existing.name == tensor.name for existing in inputs):
            raise InvalidTensor(tensor.name, "appears twice in 'inputs'")
        inputs.append(tensor)
    if offset != len(view):
        raise InvalidInferRequest(
            f"{len(view) - offset} bytes follow the JSON header that no input's "
            "binary_data_size accounts for"
        )
    return InferRequest(
        inputs=tuple(inputs),
        outputs=_outputs(document.get("outputs")),
        id=request_id,
        parameters=parameters,
    )


def _load_json(data: memoryview) -> Any:
    try:
        return json.loads(bytes(data))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInferRequest(f"the JSON header is malformed: {exc}") from None
    except RecursionError:
        raise InvalidInferRequest("the JSON header is nested too deeply") from None


def _input(
    raw: object, index: int, body: memoryview, offset: int, *, binary_allowed: bool
) -> tuple[InputTensor, int]:
    """One entry of ``inputs`` and the body offset after its binary data (if any)."""
    if not isinstance(raw, dict):
        raise InvalidInferRequest(f"inputs[{index}] must be an object")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInferRequest(f"inputs[{index}] needs a non-empty string 'name'")
    datatype = raw.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise InvalidTensor(name, f"datatype must be one of {', '.join(sorted(DATATYPES))}")
    if "shape" not in raw:
        raise InvalidTensor(name, "needs a 'shape'")
    shape = check_shape(raw["shape"], name)
    parameters = _parameters(raw.get("parameters"), f"input '{name}'")
    for key in _UNSUPPORTED_INPUT_PARAMETERS:
        if key in parameters:
            raise InvalidTensor(
                name, f"parameter {key!r}: the shared-memory extension is not supported"
            )
    size = parameters.get("binary_data_size")
    if size is None:
        if "data" not in raw:
            raise InvalidTensor(name, "has neither 'data' nor parameters.binary_data_size")
        data = array_from_json(raw["data"], datatype, shape, name)
        return InputTensor(name, datatype, shape, data, parameters), offset
    if "data" in raw:
        raise InvalidTensor(name, "has both 'data' and parameters.binary_data_size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InvalidTensor(name, "parameters.binary_data_size must be a non-negative integer")
    if not binary_allowed:
        raise InvalidTensor(name, f"binary_data_size needs the {HEADER_LENGTH} header")
    if size > len(body) - offset:
        raise InvalidTensor(
            name,
            f"binary_data_size is {size} but only {len(body) - offset} bytes of binary data remain",
        )
    data = array_from_raw(body[offset : offset + size], datatype, shape, name)
    return InputTensor(name, datatype, shape, data, parameters), offset + size


def _outputs(raw: object) -> tuple[RequestedOutput, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidInferRequest("'outputs' must be a list")
    outputs: list[RequestedOutput] = []
    for index, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise InvalidInferRequest(f"outputs[{index}] must be an object")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidInferRequest(f"outputs[{index}] needs a non-empty string 'name'")
        if any(existing.name == name for existing in outputs):
            raise InvalidTensor(name, "appears twice in 'outputs'", role="output")
        parameters = _parameters(entry.get("parameters"), f"output '{name}'")
        for key in _UNSUPPORTED_OUTPUT_PARAMETERS:
            if key in parameters:
                raise InvalidTensor(name, f"parameter {key!r} is not supported", role="output")
        binary = parameters.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise InvalidTensor(name, "parameters.binary_data must be true or false", role="output")
        outputs.append(RequestedOutput(name, binary, parameters))
    return tuple(outputs)


def _parameters(raw: object, owner: str) -> Parameters:
    """A ``parameters`` object: string keys, scalar (bool/number/string) values."""
    if raw is None:
        return frozen_parameters({})
    if not isinstance(raw, dict):
        raise InvalidInferRequest(f"{owner} 'parameters' must be an object")
    values: dict[str, ParameterValue] = {}
    for key, value in raw.items():
        if not isinstance(value, bool | int | float | str):
            raise InvalidInferRequest(
                f"{owner} parameter {key!r} must be a string, number or boolean"
            )
        values[key] = value
    if "binary_data_output" in values and not isinstance(values["binary_data_output"], bool):
        raise InvalidInferRequest("parameter 'binary_data_output' must be true or false")
    return frozen_parameters(values)


@dataclass(frozen=True, slots=True)
class EncodedResponse:
    """A REST response body; ``header_length`` is set iff binary outputs follow the JSON."""

    body: bytes
    header_length: int | None

    @property
    def content_type(self) -> str:
        """JSON when the body is only JSON, octet-stream when binary data follows."""
        return JSON_CONTENT_TYPE if self.header_length is None else BINARY_CONTENT_TYPE

    def headers(self) -> dict[str, str]:
        """Content-Type and, for binary bodies, the header-length header."""
        found = {"Content-Type": self.content_type}
        if self.header_length is not None:
            found[HEADER_LENGTH] = str(self.header_length)
        return found


def encode_infer_response(response: InferResponse, request: InferRequest) -> EncodedResponse:
    """Encode ``response`` for the REST client that sent ``request``.

    An output goes binary when its requested output says ``binary_data: true``, or when it
    does not say and the request has ``binary_data_output: true``. Raises InvalidTensor
    (role ``output``) for a BYTES output that is not UTF-8 but must go as JSON.
    """
    choices = {output.name: output.binary_data for output in request.outputs}
    default = request.binary_data_output
    blobs: list[bytes] = []
    outputs: list[dict[str, Any]] = []
    for output in response.outputs:
        entry: dict[str, Any] = {
            "name": output.name,
            "datatype": output.datatype,
            "shape": list(output.shape),
        }
        parameters: dict[str, ParameterValue] = dict(output.parameters)
        binary = choices.get(output.name)
        if binary if binary is not None else default:
            blob = raw_from_array(output.data, output.datatype)
            parameters["binary_data_size"] = len(blob)
            blobs.append(blob)
        else:
            entry["data"] = json_from_array(output.data, output.datatype, output.name)
        if parameters:
            entry["parameters"] = parameters
        outputs.append(entry)
    document: dict[str, Any] = {"model_name": response.model_name}
    if response.model_version is not None:
        document["model_version"] = response.model_version
    if response.id is not None:
        document["id"] = response.id
    if response.parameters:
        document["parameters"] = _plain(response.parameters)
    document["outputs"] = outputs
    header = json.dumps(document, separators=(",", ":")).encode("utf-8")
    if not blobs:
        return EncodedResponse(header, None)
    return EncodedResponse(b"".join([header, *blobs]), len(header))


def _plain(values: Mapping[str, ParameterValue]) -> dict[str, ParameterValue]:
    return dict(values)
