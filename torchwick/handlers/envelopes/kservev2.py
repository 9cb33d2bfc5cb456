"""``kservev2`` envelope (KServe v2 / Open Inference Protocol).

In: ``{"id": ..., "inputs": [{"name", "shape", "datatype", "data"}, ...]}``. Each input is one
handler item: the input dict itself with ``data`` reshaped to ``shape`` (nested lists), or, for
``datatype: BYTES``, the first element of ``data``. Out, per request:
``{"id", "model_name", "model_version", "outputs": [...]}`` where output *i* is handler result
*i* flattened: ``{"name": <name of input i>, "datatype", "data", "shape": [n]}``. ``id`` is the
request's own ``id`` when it has a non-blank one, else the server's request id.

Failure mode: a body without an ``inputs`` list of objects with ``name``, ``shape``,
``datatype`` and ``data``, an unknown datatype, or data that does not fit its shape ->
``EnvelopeError`` (400) for that request. More results than inputs -> ``RuntimeError`` (500).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .base import BaseEnvelope, EnvelopeError, Parsed, json_body

DATATYPES: dict[str, str] = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BYTES": "byte",
}
_FROM_NUMPY = {numpy_name: v2 for v2, numpy_name in DATATYPES.items()}


def to_datatype(dtype: np.dtype[Any]) -> str:
    """The v2 datatype of a numpy dtype; text and objects are ``BYTES``."""
    return _FROM_NUMPY.get(str(dtype), "BYTES")


def _input_item(index: int, value: Any) -> dict[str, Any]:
    where = f"service envelope 'kservev2': inputs[{index}]"
    if not isinstance(value, dict):
        raise EnvelopeError(f"{where} must be an object")
    missing = [k for k in ("name", "shape", "datatype", "data") if k not in value]
    if missing:
        raise EnvelopeError(f"{where} has no {', '.join(missing)}")
    datatype, shape, data = value["datatype"], value["shape"], value["data"]
    if datatype not in DATATYPES:
        raise EnvelopeError(f"{where}: unknown datatype {datatype!r}")
    if not isinstance(data, list) or not data:
        raise EnvelopeError(f"{where}: 'data' must be a non-empty list")
    item = dict(value)
    if datatype == "BYTES":
        item["data"] = data[0]
        return item
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise EnvelopeError(f"{where}: 'shape' must be a list of non-negative integers")
    try:
        array = np.asarray(data)
        if array.dtype.kind not in "biuf" or array.size != math.prod(shape):
            raise ValueError
        item["data"] = array.reshape(tuple(shape)).tolist()
    except ValueError:
        raise EnvelopeError(
            f"{where}: 'data' must hold {math.prod(shape)} numbers for shape {shape}"
        ) from None
    return item


class KServev2Envelope(BaseEnvelope):
    """KServe v2 wrapping and unwrapping (see the module docstring)."""

    name = "kservev2"

    def parse_request(self, row: Any, explain: bool) -> Parsed:
        body = json_body(self.name, row)
        inputs = body.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise EnvelopeError("service envelope 'kservev2': the body needs an 'inputs' list")
        items = [_input_item(i, value) for i, value in enumerate(inputs)]
        request_id = body.get("id")
        meta = {
            "names": [item["name"] for item in items],
            "id": request_id if isinstance(request_id, str) and request_id.strip() else None,
        }
        return Parsed(items, explain, meta)

    def format_request(self, parsed: Parsed, outputs: list[Any], context: Any) -> Any:
        names: list[str] = parsed.meta["names"]
        if len(outputs) > len(names):
            raise RuntimeError(
                f"the handler returned {len(outputs)} outputs for {len(names)} v2 inputs"
            )
        request_id = parsed.meta["id"] or parsed.meta.get("request_id")
        model = (getattr(context, "manifest", None) or {}).get("model", {})
        results = []
        for name, output in zip(names, outputs, strict=False):
            array = np.asarray(output).flatten()
            results.append(
                {
                    "name": name,
                    "datatype": to_datatype(array.dtype),
                    "data": array.tolist(),
                    "shape": [int(array.shape[0])],
                }
            )
        return {
            "id": request_id,
            "model_name": model.get("modelName"),
            "model_version": model.get("modelVersion"),
            "outputs": results,
        }
