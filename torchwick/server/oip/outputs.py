"""Build an Open Inference Protocol response from a handler's named outputs.

A handler (or the data plane on its behalf) produces ``{output name: array}`` where an array
is a numpy array or a torch tensor (any device; it is copied to the host). The datatype
follows from the dtype (:func:`~.datatypes.datatype_of`): ``bool`` -> BOOL, ``float32`` ->
FP32, ``object``/``bytes_``/``str_`` -> BYTES, ``torch.bfloat16`` or
``ml_dtypes.bfloat16`` -> BF16, and so on.

Requested outputs are honoured: when the request names outputs, exactly those are
returned, in the request's order, and a name the handler did not produce raises
:class:`~torchwick.server.errors.UnknownOutput` naming it. A value that is not an array, or
whose dtype has no protocol datatype (complex, datetime), raises
:class:`~torchwick.server.errors.InternalError`: the model's output is at fault, not the
client.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from torchwick.server.errors import InternalError, UnknownOutput

from .datatypes import BF16_DTYPE, datatype_of
from .tensors import InferRequest, InferResponse, OutputTensor, Parameters, frozen_parameters


def build_infer_response(
    produced: Mapping[str, object],
    request: InferRequest,
    *,
    model_name: str,
    model_version: str | None = None,
    parameters: Parameters | None = None,
) -> InferResponse:
    """The response to ``request`` from the handler's ``produced`` outputs.

    The request's ``id`` is echoed. Raises UnknownOutput for a requested name missing from
    ``produced`` and InternalError for an output value that cannot be sent.
    """
    if request.outputs:
        missing = [out.name for out in request.outputs if out.name not in produced]
        if missing:
            raise UnknownOutput(missing[0], tuple(produced))
        names = [out.name for out in request.outputs]
    else:
        names = list(produced)
    outputs = tuple(output_tensor(name, produced[name]) for name in names)
    return InferResponse(
        model_name=model_name,
        model_version=model_version,
        id=request.id,
        outputs=outputs,
        parameters=frozen_parameters(parameters or {}),
    )


def output_tensor(name: str, value: object) -> OutputTensor:
    """One named output as an :class:`OutputTensor`; InternalError if it cannot be sent."""
    array = to_numpy(value, name)
    datatype = datatype_of(array.dtype)
    if datatype is None:
        raise InternalError(f"output '{name}': dtype {array.dtype} has no protocol datatype")
    if datatype == "BYTES" and array.dtype.kind == "O":
        for element in array.reshape(-1).tolist():
            if not isinstance(element, bytes | str):
                raise InternalError(
                    f"output '{name}': BYTES element of type {type(element).__name__}"
                )
    return OutputTensor(name, datatype, tuple(int(d) for d in array.shape), array)


def to_numpy(value: object, name: str) -> npt.NDArray[Any]:
    """A numpy array for a numpy array, numpy scalar or torch tensor (moved to the host)."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, np.generic):
        return np.asarray(value)
    torch = sys.modules.get("torch")  # a torch tensor can only exist once torch is imported
    if torch is not None and isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        if tensor.dtype == torch.bfloat16:
            if BF16_DTYPE is None:
                raise InternalError(f"output '{name}': BF16 needs the ml_dtypes package")
            # numpy has no bfloat16: reinterpret the 16-bit patterns without rounding.
            bits: npt.NDArray[Any] = tensor.contiguous().view(torch.int16).numpy()
            return bits.view(BF16_DTYPE)
        converted: npt.NDArray[Any] = tensor.contiguous().numpy()
        return converted
    raise InternalError(
        f"output '{name}': {type(value).__name__} is not a numpy array or torch tensor"
    )
