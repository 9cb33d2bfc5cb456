"""A model version's declared inputs and outputs, for the metadata call (OIP, gRPC, REST).

Declared in the archive's ``model-config.yaml`` under ``metadata``::

    metadata:
      platform: pytorch_torchscript      # optional; default "pytorch"
      inputs:
        - {name: input__0, datatype: FP32, shape: [-1, 64]}
      outputs:
        - {name: output__0, datatype: FP32, shape: [-1, 10]}

A version that declares nothing has empty inputs and outputs (the Open Inference Protocol
allows that). A malformed declaration is a ``BadRequest`` naming the entry, raised when the
metadata is asked for (the model still serves predictions). The yaml is the one parsed at
registration (``ModelVersionConfig.yaml_config``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchwick.server.contracts import TensorSpec
from torchwick.server.errors import BadRequest

#: The Open Inference Protocol's tensor datatypes.
OIP_DATATYPES = frozenset(
    {
        "BOOL",
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "FP16",
        "FP32",
        "FP64",
        "BF16",
        "BYTES",
    }
)
DEFAULT_PLATFORM = "pytorch"


def declared_platform(config: Mapping[str, Any]) -> str:
    """``metadata.platform`` from a model-config mapping, else ``pytorch``."""
    section = config.get("metadata")
    if isinstance(section, Mapping):
        value = section.get("platform")
        if isinstance(value, str) and value:
            return value
    return DEFAULT_PLATFORM


def declared_tensors(config: Mapping[str, Any], kind: str) -> tuple[TensorSpec, ...]:
    """``metadata.inputs`` or ``metadata.outputs`` as tensor specs; ``()`` when absent."""
    section = config.get("metadata")
    if section is None:
        return ()
    if not isinstance(section, Mapping):
        raise BadRequest("model-config metadata must be a mapping")
    items = section.get(kind, ())
    if not isinstance(items, list | tuple):
        raise BadRequest(f"model-config metadata.{kind} must be a list")
    return tuple(_tensor(item, f"metadata.{kind}[{index}]") for index, item in enumerate(items))


def _tensor(item: object, where: str) -> TensorSpec:
    if not isinstance(item, Mapping):
        raise BadRequest(f"model-config {where} must be a mapping with name, datatype, shape")
    name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape", [])
    if not isinstance(name, str) or not name:
        raise BadRequest(f"model-config {where}.name must be a non-empty string")
    if not isinstance(datatype, str) or datatype.upper() not in OIP_DATATYPES:
        raise BadRequest(
            f"model-config {where}.datatype must be one of {', '.join(sorted(OIP_DATATYPES))}"
        )
    if not isinstance(shape, list | tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= -1 for d in shape
    ):
        raise BadRequest(f"model-config {where}.shape must be a list of integers >= -1")
    return TensorSpec(name, datatype.upper(), tuple(shape))
