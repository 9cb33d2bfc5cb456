"""Open Inference Protocol (KServe v2 / Triton) codecs: pure functions, no I/O.

- :mod:`.rest`: JSON tensor format and the binary tensor data extension.
- :mod:`.grpc_codec`: ``ModelInferRequest``/``ModelInferResponse`` messages.
- :mod:`.outputs`: a handler's ``{name: array}`` to a response, honouring requested outputs.
- :mod:`.tensors`: the decoded dataclasses both codecs share.
- :mod:`.datatypes`: datatype names, shapes and the raw tensor layout.

See docs/oip.md for the decoded form a handler receives.

Names are imported on first use: the codecs need numpy, which the server should not import
before its first OIP request (start-up time).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torchwick._lazy import lazy_exports

if TYPE_CHECKING:
    from .datatypes import DATATYPES, array_from_raw, datatype_of, raw_from_array
    from .grpc_codec import decode_model_infer_request, encode_model_infer_response
    from .json_tensors import array_from_json, json_from_array
    from .outputs import build_infer_response, output_tensor
    from .rest import (
        BINARY_CONTENT_TYPE,
        HEADER_LENGTH,
        JSON_CONTENT_TYPE,
        EncodedResponse,
        decode_infer_request,
        encode_infer_response,
        parse_header_length,
    )
    from .tensors import (
        InferRequest,
        InferResponse,
        InputTensor,
        OutputTensor,
        Parameters,
        ParameterValue,
        RequestedOutput,
    )

_EXPORTS = {
    "BINARY_CONTENT_TYPE": ".rest",
    "DATATYPES": ".datatypes",
    "EncodedResponse": ".rest",
    "HEADER_LENGTH": ".rest",
    "InferRequest": ".tensors",
    "InferResponse": ".tensors",
    "InputTensor": ".tensors",
    "JSON_CONTENT_TYPE": ".rest",
    "OutputTensor": ".tensors",
    "ParameterValue": ".tensors",
    "Parameters": ".tensors",
    "RequestedOutput": ".tensors",
    "array_from_json": ".json_tensors",
    "array_from_raw": ".datatypes",
    "build_infer_response": ".outputs",
    "datatype_of": ".datatypes",
    "decode_infer_request": ".rest",
    "decode_model_infer_request": ".grpc_codec",
    "encode_infer_response": ".rest",
    "encode_model_infer_response": ".grpc_codec",
    "json_from_array": ".json_tensors",
    "output_tensor": ".outputs",
    "parse_header_length": ".rest",
    "raw_from_array": ".datatypes",
}

__all__ = [
    "BINARY_CONTENT_TYPE",
    "DATATYPES",
    "HEADER_LENGTH",
    "JSON_CONTENT_TYPE",
    "EncodedResponse",
    "InferRequest",
    "InferResponse",
    "InputTensor",
    "OutputTensor",
    "ParameterValue",
    "Parameters",
    "RequestedOutput",
    "array_from_json",
    "array_from_raw",
    "build_infer_response",
    "datatype_of",
    "decode_infer_request",
    "decode_model_infer_request",
    "encode_infer_response",
    "encode_model_infer_response",
    "json_from_array",
    "output_tensor",
    "parse_header_length",
    "raw_from_array",
]


__getattr__ = lazy_exports(__name__, _EXPORTS, globals())
