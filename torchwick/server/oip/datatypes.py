"""Open Inference Protocol datatypes, shapes and the raw (binary) tensor layout.

The protocol names tensor element types with strings (``"FP32"``, ``"BYTES"``, ...). Fixed
size types travel raw as little-endian, row-major element bytes without padding; ``BYTES``
elements travel as a 4-byte little-endian length followed by that many bytes each. Inside
torchwick a tensor is a numpy array: fixed-size types use the numpy dtype below, ``BYTES``
is an ``object`` array of ``bytes``.

BF16 has no numpy dtype of its own; it is represented by ``ml_dtypes.bfloat16`` (the same
choice tritonclient makes). ``ml_dtypes`` is optional: without it a BF16 tensor is refused
with :class:`~torchwick.server.errors.InvalidTensor` instead of being reinterpreted.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from torchwick.server.errors import InvalidTensor

try:  # optional: only BF16 needs it
    import ml_dtypes as _ml_dtypes

    BF16_DTYPE: np.dtype[Any] | None = np.dtype(_ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - depends on the environment
    BF16_DTYPE = None

#: Datatype name -> little-endian numpy dtype, for every fixed-size datatype except BF16.
FIXED_DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
#: Every datatype name of the protocol.
DATATYPES: frozenset[str] = frozenset({*FIXED_DTYPES, "BF16", "BYTES"})

#: Largest dimension a shape may hold (shapes are int64 on the gRPC wire).
MAX_DIM = 2**63 - 1

_LENGTH = struct.Struct("<I")


def fixed_dtype(datatype: str, tensor: str, *, role: str = "input") -> np.dtype[Any] | None:
    """The numpy dtype of a fixed-size ``datatype``, ``None`` for ``BYTES``.

    Raises InvalidTensor for a name outside the protocol, or BF16 without ``ml_dtypes``.
    """
    if datatype == "BYTES":
        return None
    found = FIXED_DTYPES.get(datatype)
    if found is not None:
        return found
    if datatype == "BF16":
        if BF16_DTYPE is None:
            raise InvalidTensor(tensor, "BF16 needs the ml_dtypes package on the server", role=role)
        return BF16_DTYPE
    known = ", ".join(sorted(DATATYPES))
    raise InvalidTensor(tensor, f"unknown datatype {datatype!r} (known: {known})", role=role)


def datatype_of(dtype: np.dtype[Any]) -> str | None:
    """The protocol datatype for a numpy dtype (either byte order), or ``None`` if it has none.

    ``object``, ``bytes_`` and ``str_`` arrays map to ``BYTES``.
    """
    if dtype.kind in "OSU":
        return "BYTES"
    if BF16_DTYPE is not None and dtype == BF16_DTYPE:
        return "BF16"
    normalized = dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype
    for name, candidate in FIXED_DTYPES.items():
        if normalized == candidate:
            return name
    return None


def check_shape(shape: object, tensor: str, *, role: str = "input") -> tuple[int, ...]:
    """Validate a decoded shape: a list of integers in ``0..MAX_DIM`` (bools are not integers).

    Returns the shape as a tuple. Raises InvalidTensor naming the tensor otherwise.
    """
    if not isinstance(shape, Sequence) or isinstance(shape, str | bytes):
        raise InvalidTensor(tensor, "shape must be a list of integers", role=role)
    dims: list[int] = []
    for dim in shape:
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise InvalidTensor(tensor, f"shape {list(shape)!r} holds a non-integer", role=role)
        if dim < 0 or dim > MAX_DIM:
            raise InvalidTensor(
                tensor, f"shape {list(shape)!r} has a dimension out of range", role=role
            )
        dims.append(dim)
    return tuple(dims)


def element_count(shape: tuple[int, ...]) -> int:
    """Number of elements of a validated shape (an exact Python int: cannot overflow)."""
    return math.prod(shape)


def array_from_raw(
    raw: bytes | memoryview, datatype: str, shape: tuple[int, ...], tensor: str
) -> npt.NDArray[Any]:
    """Decode one tensor's raw bytes into an array of ``shape``.

    Fixed-size types are zero-copy: the result is a read-only view of ``raw``. BOOL bytes
    must be 0 or 1. BYTES must hold exactly ``element_count(shape)`` length-prefixed
    elements and nothing after them. Raises InvalidTensor on any size mismatch.
    """
    count = element_count(shape)
    dtype = fixed_dtype(datatype, tensor)
    if dtype is None:
        return _bytes_elements(raw, count, tensor).reshape(shape)
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise InvalidTensor(
            tensor,
            f"{datatype} shape {list(shape)} needs {expected} bytes of raw data, got {len(raw)}",
        )
    if datatype == "BOOL" and expected and int(np.frombuffer(raw, np.uint8).max()) > 1:
        raise InvalidTensor(tensor, "BOOL raw data holds a byte other than 0 or 1")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _bytes_elements(raw: bytes | memoryview, count: int, tensor: str) -> npt.NDArray[np.object_]:
    view = memoryview(raw).cast("B")
    elements: list[bytes] = []
    offset = 0
    while offset < len(view):
        if len(elements) == count:
            raise InvalidTensor(tensor, f"BYTES raw data holds more than {count} elements")
        if offset + 4 > len(view):
            raise InvalidTensor(tensor, f"BYTES element {len(elements)} has a truncated length")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise InvalidTensor(
                tensor, f"BYTES element {len(elements)} declares {length} bytes past the end"
            )
        elements.append(bytes(view[offset : offset + length]))
        offset += length
    if len(elements) != count:
        raise InvalidTensor(
            tensor, f"BYTES raw data holds {len(elements)} elements, shape needs {count}"
        )
    out = np.empty(count, dtype=object)
    out[:] = elements
    return out


def raw_from_array(array: npt.NDArray[Any], datatype: str) -> bytes:
    """Encode an array in the raw layout of ``datatype`` (row-major, little-endian).

    ``BYTES`` elements may be ``bytes`` or ``str`` (encoded as UTF-8); anything else is a
    TypeError, since it is the model's output, not the client's input, that is wrong.
    """
    if datatype != "BYTES":
        dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
        return np.ascontiguousarray(array, dtype=dtype).tobytes()
    parts: list[bytes] = []
    for element in array.reshape(-1).tolist():
        data = element_bytes(element)
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def element_bytes(element: object) -> bytes:
    """One BYTES element as bytes: bytes as is, str as UTF-8; TypeError for anything else."""
    if isinstance(element, bytes):
        return element
    if isinstance(element, str):
        return element.encode("utf-8")
    raise TypeError(f"BYTES element of type {type(element).__name__}")
