"""Tensor data in the JSON form of the Open Inference Protocol.

A JSON tensor's ``data`` is a list of elements in row-major order, either flat or nested
exactly as ``shape`` (``[[1, 2], [3, 4]]`` for shape ``[2, 2]``). Element kinds are strict:
BOOL takes ``true``/``false``; integer types take JSON integers (no ``true``, no ``1.0``)
within the type's range; FP16/BF16/FP32/FP64 take any JSON number (not ``true``); BYTES
takes strings, stored as their UTF-8 bytes. Every violation raises
:class:`~torchwick.server.errors.InvalidTensor` naming the tensor.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from torchwick.server.errors import InvalidTensor

from .datatypes import element_count, fixed_dtype

_INTEGER_TYPES = frozenset(
    {"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"}
)
_FLOAT_TYPES = frozenset({"FP16", "BF16", "FP32", "FP64"})


def array_from_json(
    data: object, datatype: str, shape: tuple[int, ...], tensor: str
) -> npt.NDArray[Any]:
    """Decode a JSON ``data`` value into an array of ``shape`` and ``datatype``.

    Raises InvalidTensor for ragged or mis-nested data, an element count that does not
    match the shape, an element of the wrong kind or out of the datatype's range.
    """
    dtype = fixed_dtype(datatype, tensor)
    if not isinstance(data, list):
        raise InvalidTensor(tensor, "data must be a JSON array")
    flat = _flatten(data, shape, tensor)
    if len(flat) != element_count(shape):
        raise InvalidTensor(
            tensor,
            f"shape {list(shape)} needs {element_count(shape)} elements, data has {len(flat)}",
        )
    kinds = {type(element) for element in flat}
    if datatype == "BYTES":
        _require(kinds, {str}, "strings", datatype, tensor)
        out = np.empty(len(flat), dtype=object)
        out[:] = [element.encode("utf-8") for element in flat]
        return out.reshape(shape)
    assert dtype is not None  # only BYTES has no fixed dtype
    if datatype == "BOOL":
        _require(kinds, {bool}, "true or false", datatype, tensor)
        return np.array(flat, dtype=dtype).reshape(shape)
    if datatype in _INTEGER_TYPES:
        _require(kinds, {int}, "integers", datatype, tensor)
        try:
            return np.array(flat, dtype=dtype).reshape(shape)
        except OverflowError:
            info = np.iinfo(dtype)
            raise InvalidTensor(
                tensor, f"a value is out of range for {datatype} ({info.min}..{info.max})"
            ) from None
    _require(kinds, {int, float}, "numbers", datatype, tensor)
    try:
        as_float = np.array(flat, dtype=np.float64)
    except OverflowError:  # an integer beyond float64
        raise InvalidTensor(tensor, f"a value is out of range for {datatype}") from None
    return as_float.astype(dtype).reshape(shape)


def _flatten(data: list[Any], shape: tuple[int, ...], tensor: str) -> list[Any]:
    """The elements of flat or shape-nested ``data`` in row-major order."""
    if not any(isinstance(element, list) for element in data):
        return data
    try:
        nested = np.array(data, dtype=object)
    except ValueError:
        raise InvalidTensor(tensor, "nested data is ragged") from None
    if nested.shape != shape:
        raise InvalidTensor(
            tensor, f"nested data has shape {list(nested.shape)}, shape is {list(shape)}"
        )
    flat: list[Any] = nested.reshape(-1).tolist()
    return flat


def _require(kinds: set[type], allowed: set[type], what: str, datatype: str, tensor: str) -> None:
    wrong = kinds - allowed
    if wrong:
        names = ", ".join(sorted("array" if k is list else _json_name(k) for k in wrong))
        raise InvalidTensor(tensor, f"{datatype} data must be {what}, found {names}")


def _json_name(kind: type) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", dict: "object"}.get(
        kind, "null" if kind is type(None) else kind.__name__
    )


def json_from_array(array: npt.NDArray[Any], datatype: str, tensor: str) -> list[Any]:
    """Flat JSON-ready list of an output array's elements (row-major).

    FP16/BF16 become Python floats; BYTES elements must be UTF-8 text, else InvalidTensor
    (role ``output``) tells the client to ask for that output as binary data.
    """
    flat = array.reshape(-1)
    if datatype == "BYTES":
        values: list[Any] = []
        for element in flat.tolist():
            if isinstance(element, str):
                values.append(element)
                continue
            try:
                values.append(bytes(element).decode("utf-8"))
            except (UnicodeDecodeError, TypeError):
                raise InvalidTensor(
                    tensor,
                    "BYTES output is not UTF-8 text; request it with binary_data",
                    role="output",
                ) from None
        return values
    if datatype in _FLOAT_TYPES and array.dtype.itemsize == 2:
        flat = flat.astype(np.float32)
    values = flat.tolist()
    return values
