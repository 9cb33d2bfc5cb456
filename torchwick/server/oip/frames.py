"""How Open Inference Protocol tensors travel between the frontend and a worker.

The OIP adapters (REST and gRPC) hand a request to the data plane as one input per tensor:
``InputParameter(name=<tensor name>, value=<raw bytes>, content_type=<tensor type>)`` where the
raw bytes are the protocol's raw layout (``datatypes.raw_from_array``) and the content type is
``application/x-oip-tensor; datatype=FP32; shape=1,64``. The request also carries the metadata
entry ``x-torchwick-oip: 1`` so that the worker answers in tensors.

In the worker the handler sees each such input as a numpy array of that datatype and shape (a
read-only view of the frame: copy before writing). Its answer for the request (a dict of name
-> array/tensor/list, or one array/tensor/list) is sent back as ``application/x-oip-tensors``:
a JSON header ``{"outputs": [{"name", "datatype", "shape", "size"}]}`` whose byte length is
the ``inference-header-content-length`` response header, followed by each output's raw bytes
in order. Neither side ever pickles anything.

Failure modes: a tensor input whose bytes do not match its declared shape raises
``InvalidTensor`` (the worker answers that request 400); an answer that is not array-like
raises ``TypeError`` (that request answers 500); a malformed output frame raises
``InvalidInferRequest`` on the frontend (a broken worker: answered 500 by the caller).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from torchwick.server.errors import InternalError, InvalidTensor

from .datatypes import array_from_raw, check_shape, datatype_of, fixed_dtype, raw_from_array

TENSOR_CONTENT_TYPE = "application/x-oip-tensor"
OUTPUTS_CONTENT_TYPE = "application/x-oip-tensors"
OIP_MARKER = "x-torchwick-oip"
HEADER_LENGTH = "inference-header-content-length"
#: Name given to a handler's single, unnamed output.
DEFAULT_OUTPUT = "output__0"


def tensor_content_type(datatype: str, shape: Sequence[int]) -> str:
    """The content type that carries one tensor's datatype and shape."""
    return f"{TENSOR_CONTENT_TYPE}; datatype={datatype}; shape={','.join(map(str, shape))}"


def is_tensor(content_type: str | None) -> bool:
    """Whether an input's content type says it is an OIP tensor."""
    return content_type is not None and content_type.startswith(TENSOR_CONTENT_TYPE)


def decode_tensor(name: str, value: bytes | memoryview, content_type: str) -> npt.NDArray[Any]:
    """One tensor input as an array (``InvalidTensor`` when bytes and shape disagree)."""
    fields: dict[str, str] = {}
    for part in content_type.split(";")[1:]:
        key, _, text = part.strip().partition("=")
        fields[key] = text
    datatype = fields.get("datatype", "")
    try:
        dims = [int(d) for d in fields.get("shape", "").split(",") if d != ""]
    except ValueError:
        raise InvalidTensor(name, f"malformed shape {fields.get('shape')!r}") from None
    shape = check_shape(dims, name)
    return array_from_raw(value, datatype, shape, name)


@dataclass(frozen=True, slots=True)
class FramedOutput:
    """One output tensor read back from a worker's answer."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    array: npt.NDArray[Any]


def as_array(value: Any) -> npt.NDArray[Any]:
    """A handler's value (numpy array, torch tensor, list, number, str/bytes) as an array."""
    if isinstance(value, np.ndarray):
        return value
    detach = getattr(value, "detach", None)
    if callable(detach):  # a torch tensor, without importing torch here
        return np.asarray(detach().cpu().numpy())
    if isinstance(value, str | bytes):
        out = np.empty(1, dtype=object)
        out[0] = value
        return out
    array = np.asarray(value)
    if array.dtype.kind == "U":
        return array.astype(object)
    return array


def named_outputs(item: Any, declared: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """A handler's answer as name -> array. A dict is taken as named outputs; an
    ``{"outputs": [...]}`` document (a kservev2 envelope's answer) by its entries; anything
    else is one output named after the first declared output, else ``output__0``. Arrays are
    cast to the declared datatype of their name when one is declared."""
    if isinstance(item, Mapping) and isinstance(item.get("outputs"), list):
        produced: dict[str, Any] = {}
        for entry in item["outputs"]:
            if isinstance(entry, Mapping) and "name" in entry and "data" in entry:
                array = as_array(entry["data"])
                shape = entry.get("shape")
                if isinstance(shape, list) and int(np.prod(shape)) == array.size:
                    array = array.reshape(shape)
                produced[str(entry["name"])] = array
        return produced
    if isinstance(item, Mapping):
        produced = {str(k): as_array(v) for k, v in item.items()}
    else:
        first = str(declared[0]["name"]) if declared and "name" in declared[0] else None
        produced = {first or DEFAULT_OUTPUT: as_array(item)}
    kinds = {str(d.get("name")): str(d.get("datatype", "")).upper() for d in declared}
    for name, array in produced.items():
        wanted = kinds.get(name)
        if wanted and wanted != "BYTES":
            dtype = fixed_dtype(wanted, name, role="output")
            if dtype is not None and array.dtype != dtype:
                produced[name] = array.astype(dtype)
    return produced


def encode_outputs(outputs: Mapping[str, Any]) -> tuple[bytes, int]:
    """The worker's answer frame for ``outputs``: ``(body, header_length)``.

    Raises TypeError for a value with no protocol datatype (complex numbers, objects that
    are not bytes/str)."""
    header: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, value in outputs.items():
        array = as_array(value)
        datatype = datatype_of(array.dtype)
        if datatype is None:
            raise TypeError(f"output {name!r} has dtype {array.dtype}, which OIP cannot carry")
        raw = raw_from_array(array, datatype)
        header.append(
            {"name": name, "datatype": datatype, "shape": list(array.shape), "size": len(raw)}
        )
        blobs.append(raw)
    head = json.dumps({"outputs": header}, separators=(",", ":")).encode()
    return head + b"".join(blobs), len(head)


def decode_outputs(body: bytes, header_length: int) -> list[FramedOutput]:
    """Read a worker's answer frame (``InternalError`` when it is malformed)."""
    try:
        header = json.loads(body[:header_length])
        entries = header["outputs"]
        view = memoryview(body)
        offset = header_length
        outputs = []
        for entry in entries:
            name, datatype, size = str(entry["name"]), str(entry["datatype"]), int(entry["size"])
            shape = check_shape(entry["shape"], name, role="output")
            raw = view[offset : offset + size]
            offset += size
            outputs.append(
                FramedOutput(name, datatype, shape, array_from_raw(raw, datatype, shape, name))
            )
    except (ValueError, KeyError, TypeError, InvalidTensor) as exc:
        raise InternalError(f"the worker sent a malformed tensor answer: {exc}") from None
    if offset != len(body):
        raise InternalError("the worker sent a tensor answer with trailing bytes")
    return outputs
