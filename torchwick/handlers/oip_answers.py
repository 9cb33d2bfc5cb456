"""Open Inference Protocol requests inside the model service.

An OIP request (metadata ``x-torchwick-oip: 1``, inputs as tensors; see
``torchwick.server.oip.frames``) reaches the handler as one row per request mapping each input
name to a numpy array. Its answer goes back as tensors instead of JSON: a dict becomes named
outputs, anything else one output named after the model's first declared output (model-config
``metadata.outputs``) or ``output__0``. For a model served with the ``kservev2`` envelope the
row is given to the envelope as the KServe v2 JSON document it expects, so handlers written for
TorchServe's KServe integration work unchanged.

Failure modes: an input whose bytes do not fit its shape fails that request with 400; an
answer that cannot be carried as tensors fails that request with 500.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from torchwick.server.errors import TorchwickError
from torchwick.server.oip.datatypes import datatype_of
from torchwick.server.oip.frames import (
    HEADER_LENGTH,
    OIP_MARKER,
    OUTPUTS_CONTENT_TYPE,
    encode_outputs,
    named_outputs,
)

from .context import Context
from .messages import PredictRequest, PredictResponse
from .streaming import build_response

logger = logging.getLogger("torchwick.model")

DecodeError = TorchwickError

__all__ = [
    "OIP_MARKER",
    "DecodeError",
    "declared_outputs",
    "is_oip",
    "kservev2_document",
    "tensor_answer",
]


def is_oip(request: PredictRequest) -> bool:
    """Whether the frontend marked ``request`` as an Open Inference Protocol call."""
    return any(name == OIP_MARKER for name, _ in request.headers)


def declared_outputs(model_yaml_config: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The model-config's ``metadata.outputs`` entries (``[]`` when none are declared)."""
    section = model_yaml_config.get("metadata")
    outputs = section.get("outputs") if isinstance(section, Mapping) else None
    return [o for o in outputs if isinstance(o, Mapping)] if isinstance(outputs, list) else []


def kservev2_document(row: Mapping[str, Any], request_id: str) -> dict[str, Any]:
    """An OIP row as the ``{"id", "inputs": [...]}`` body the kservev2 envelope parses."""
    inputs = []
    for name, value in row.items():
        datatype = datatype_of(value.dtype) if hasattr(value, "dtype") else None
        data = value.reshape(-1).tolist() if hasattr(value, "reshape") else value
        if datatype == "BYTES":
            data = [d.decode("utf-8", "replace") if isinstance(d, bytes) else d for d in data]
        inputs.append(
            {
                "name": name,
                "shape": list(getattr(value, "shape", [len(data)])),
                "datatype": datatype or "BYTES",
                "data": data,
            }
        )
    return {"body": {"id": request_id, "inputs": inputs}}


def tensor_answer(
    context: Context,
    idx: int,
    request_id: str,
    item: Any,
    *,
    declared: Sequence[Mapping[str, Any]],
    extra_headers: Mapping[str, str],
) -> PredictResponse | None:
    """The tensor frame answering one OIP request, or ``None`` when ``item`` cannot be sent
    as tensors (the caller answers 500 and logs why)."""
    try:
        body, header_length = encode_outputs(named_outputs(item, declared))
    except (TypeError, ValueError, TorchwickError) as exc:
        logger.error("request %s: the answer cannot be sent as OIP tensors: %s", request_id, exc)
        return None
    headers = {**extra_headers, "content-type": OUTPUTS_CONTENT_TYPE}
    headers[HEADER_LENGTH] = str(header_length)
    return build_response(context, idx, request_id, body, final=True, extra_headers=headers)
