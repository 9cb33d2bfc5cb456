"""The decoded, protocol-neutral form of Open Inference Protocol requests and responses.

The REST codec (:mod:`.rest`) and the gRPC codec (:mod:`.grpc_codec`) both produce and
consume these frozen dataclasses, so the server's adapters and a handler see one shape
whatever the transport. Arrays are numpy arrays (``BYTES``: ``object`` arrays of
``bytes``); arrays decoded from binary request data are read-only views of the body.
The classes compare by identity (``eq=False``): numpy arrays have no single truth value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy.typing as npt

#: A parameter value: what JSON and ``InferParameter`` can carry.
ParameterValue = bool | int | float | str
Parameters = Mapping[str, ParameterValue]


def _empty() -> Parameters:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True, eq=False)
class InputTensor:
    """One decoded input: ``data`` has exactly ``shape`` and the dtype of ``datatype``."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: npt.NDArray[Any]
    parameters: Parameters = field(default_factory=_empty)


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    """One output the client asked for.

    ``binary_data`` is the REST binary extension's per-output choice: ``None`` when the
    client did not say (then the request's ``binary_data_output`` decides).
    """

    name: str
    binary_data: bool | None = None
    parameters: Parameters = field(default_factory=_empty)


@dataclass(frozen=True, slots=True, eq=False)
class InferRequest:
    """A decoded infer request. ``outputs`` empty means "every output the model produces"."""

    inputs: tuple[InputTensor, ...]
    outputs: tuple[RequestedOutput, ...] = ()
    id: str | None = None
    parameters: Parameters = field(default_factory=_empty)

    def arrays(self) -> dict[str, npt.NDArray[Any]]:
        """Input name -> array, in request order: the form a handler receives."""
        return {tensor.name: tensor.data for tensor in self.inputs}

    @property
    def binary_data_output(self) -> bool:
        """The REST request-level default for returning outputs as binary data."""
        return self.parameters.get("binary_data_output") is True


@dataclass(frozen=True, slots=True, eq=False)
class OutputTensor:
    """One output of a response; ``data`` has ``shape`` and the dtype of ``datatype``."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: npt.NDArray[Any]
    parameters: Parameters = field(default_factory=_empty)


@dataclass(frozen=True, slots=True, eq=False)
class InferResponse:
    """A response ready for either codec; ``outputs`` are in the order they are sent."""

    model_name: str
    outputs: tuple[OutputTensor, ...]
    model_version: str | None = None
    id: str | None = None
    parameters: Parameters = field(default_factory=_empty)


def frozen_parameters(values: Mapping[str, ParameterValue]) -> Parameters:
    """A read-only copy of ``values`` for storing in the frozen dataclasses."""
    return MappingProxyType(dict(values))
