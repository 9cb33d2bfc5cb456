"""gRPC codec of the Open Inference Protocol: ``ModelInferRequest``/``ModelInferResponse``.

A request carries each input's elements either typed, in ``InferTensorContents`` (the list
field matching the datatype: BOOL -> ``bool_contents``, INT8/16/32 -> ``int_contents``,
INT64 -> ``int64_contents``, UINT8/16/32 -> ``uint_contents``, UINT64 ->
``uint64_contents``, FP32 -> ``fp32_contents``, FP64 -> ``fp64_contents``, BYTES ->
``bytes_contents``), or raw, in ``raw_input_contents`` (one entry per input, in input
order; FP16 and BF16 only this way). Responses always use ``raw_output_contents``: every
datatype fits, it is what Triton sends, and tritonclient and KServe clients read it.

Malformed requests raise :class:`~torchwick.server.errors.InvalidInferRequest` or
:class:`~torchwick.server.errors.InvalidTensor` (INVALID_ARGUMENT).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from torchwick.server.errors import InvalidInferRequest, InvalidTensor
from torchwick.server.grpc._generated import grpc_predict_v2_pb2 as pb

from .datatypes import (
    DATATYPES,
    array_from_raw,
    check_shape,
    element_count,
    fixed_dtype,
    raw_from_array,
)
from .tensors import (
    InferRequest,
    InferResponse,
    InputTensor,
    Parameters,
    ParameterValue,
    RequestedOutput,
    frozen_parameters,
)

#: Datatype -> the InferTensorContents field holding its typed elements.
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_ALL_FIELDS = tuple(sorted(set(CONTENTS_FIELD.values())))
_INT64_RANGE = (-(2**63), 2**63 - 1)
_UNSUPPORTED_PARAMETERS = ("shared_memory_region", "shared_memory_byte_size", "classification")


def decode_model_infer_request(message: pb.ModelInferRequest) -> InferRequest:
    """The decoded form of a ``ModelInferRequest`` (model name/version stay on the message).

    Raises InvalidInferRequest when ``raw_input_contents`` does not pair with the inputs,
    InvalidTensor for a bad input (datatype, shape, element count, contents field).
    """
    raw = list(message.raw_input_contents)
    if not message.inputs:
        raise InvalidInferRequest("the request has no inputs")
    if raw and len(raw) != len(message.inputs):
        raise InvalidInferRequest(
            f"raw_input_contents has {len(raw)} entries for {len(message.inputs)} inputs"
        )
    inputs: list[InputTensor] = []
    for index, tensor in enumerate(message.inputs):
        name = tensor.name
        if not name:
            raise InvalidInferRequest(f"inputs[{index}] has no name")
        if any(existing.name == name for existing in inputs):
            raise InvalidTensor(name, "appears twice in inputs")
        if tensor.datatype not in DATATYPES:
            raise InvalidTensor(name, f"datatype must be one of {', '.join(sorted(DATATYPES))}")
        shape = check_shape(list(tensor.shape), name)
        parameters = _parameters(tensor.parameters, f"input '{name}'")
        if raw:
            if tensor.HasField("contents"):
                raise InvalidTensor(name, "has contents although raw_input_contents is used")
            data = array_from_raw(raw[index], tensor.datatype, shape, name)
        else:
            data = _from_contents(tensor.contents, tensor.datatype, shape, name)
        inputs.append(InputTensor(name, tensor.datatype, shape, data, parameters))
    outputs: list[RequestedOutput] = []
    for index, requested in enumerate(message.outputs):
        if not requested.name:
            raise InvalidInferRequest(f"outputs[{index}] has no name")
        if any(existing.name == requested.name for existing in outputs):
            raise InvalidTensor(requested.name, "appears twice in outputs", role="output")
        parameters = _parameters(requested.parameters, f"output '{requested.name}'")
        outputs.append(RequestedOutput(requested.name, None, parameters))
    return InferRequest(
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        id=message.id or None,
        parameters=_parameters(message.parameters, "request"),
    )


def _from_contents(
    contents: pb.InferTensorContents, datatype: str, shape: tuple[int, ...], name: str
) -> npt.NDArray[Any]:
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidTensor(name, f"{datatype} data must be sent in raw_input_contents")
    for other in _ALL_FIELDS:
        if other != field and len(getattr(contents, other)):
            raise InvalidTensor(name, f"{datatype} data belongs in contents.{field}, not {other}")
    values: list[Any] = list(getattr(contents, field))
    count = element_count(shape)
    if len(values) != count:
        raise InvalidTensor(
            name, f"shape {list(shape)} needs {count} elements, contents.{field} has {len(values)}"
        )
    if datatype == "BYTES":
        out = np.empty(count, dtype=object)
        out[:] = values
        return out.reshape(shape)
    dtype = fixed_dtype(datatype, name)
    try:
        return np.array(values, dtype=dtype).reshape(shape)
    except OverflowError:  # int_contents/uint_contents wider than INT8/16, UINT8/16
        raise InvalidTensor(name, f"a value is out of range for {datatype}") from None


def _parameters(raw: Mapping[str, pb.InferParameter], owner: str) -> Parameters:
    values: dict[str, ParameterValue] = {}
    for key, parameter in raw.items():
        if key in _UNSUPPORTED_PARAMETERS:
            raise InvalidInferRequest(f"{owner} parameter {key!r} is not supported")
        choice = parameter.WhichOneof("parameter_choice")
        if choice is None:
            # Triton's double_param/uint64_param (fields 4, 5) are not in KServe v2.
            raise InvalidInferRequest(
                f"{owner} parameter {key!r} has no bool, int64 or string value"
            )
        values[key] = getattr(parameter, choice)
    return frozen_parameters(values)


def encode_model_infer_response(response: InferResponse) -> pb.ModelInferResponse:
    """A ``ModelInferResponse`` with every output's bytes in ``raw_output_contents``.

    Parameter values map to ``bool_param``/``int64_param``/``string_param``; a float has
    no field in the KServe message and is sent as its ``repr`` string. An int outside
    int64 raises ValueError (a server-side bug, not a client error).
    """
    message = pb.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version or "",
        id=response.id or "",
    )
    _set_parameters(message.parameters, response.parameters)
    for output in response.outputs:
        tensor = message.outputs.add(name=output.name, datatype=output.datatype)
        tensor.shape.extend(output.shape)
        _set_parameters(tensor.parameters, output.parameters)
        message.raw_output_contents.append(raw_from_array(output.data, output.datatype))
    return message


def _set_parameters(target: Any, values: Parameters) -> None:
    """Fill a ``map<string, InferParameter>`` field from plain values."""
    for key, value in values.items():
        parameter = target[key]
        if isinstance(value, bool):
            parameter.bool_param = value
        elif isinstance(value, int):
            if not _INT64_RANGE[0] <= value <= _INT64_RANGE[1]:
                raise ValueError(f"parameter {key!r} = {value} does not fit int64")
            parameter.int64_param = value
        elif isinstance(value, float):
            parameter.string_param = repr(value)
        else:
            parameter.string_param = value
