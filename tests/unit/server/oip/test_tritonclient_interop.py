"""Round trips through tritonclient's own request builders and result parsers (no server).

tritonclient is a real third-party OIP client: its HTTP request body builder and
``InferResult`` parser, and its gRPC request builder and ``InferResult``, must agree with
our codecs byte for byte.
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import _utils as grpc_utils
from tritonclient.grpc import service_pb2

from torchwick.server.grpc._generated import grpc_predict_v2_pb2 as pb
from torchwick.server.oip import (
    build_infer_response,
    decode_infer_request,
    decode_model_infer_request,
    encode_infer_response,
    encode_model_infer_response,
    parse_header_length,
)

ARRAYS: dict[str, Any] = {
    "BOOL": np.array([[True, False, True]]),
    "UINT8": np.array([[0, 7, 255]], dtype=np.uint8),
    "UINT16": np.array([[0, 7, 65535]], dtype=np.uint16),
    "UINT32": np.array([[0, 7, 2**32 - 1]], dtype=np.uint32),
    "UINT64": np.array([[0, 7, 2**64 - 1]], dtype=np.uint64),
    "INT8": np.array([[-128, 0, 127]], dtype=np.int8),
    "INT16": np.array([[-(2**15), 0, 2**15 - 1]], dtype=np.int16),
    "INT32": np.array([[-(2**31), 0, 2**31 - 1]], dtype=np.int32),
    "INT64": np.array([[-(2**63), 0, 2**63 - 1]], dtype=np.int64),
    "FP16": np.array([[0.5, -1.0, 65504.0]], dtype=np.float16),
    "FP32": np.array([[0.25, -1.5, 3.0e38]], dtype=np.float32),
    "FP64": np.array([[1e-300, -2.5, 1e300]], dtype=np.float64),
    "BF16": np.array([[0.5, -1.0, 3.0]], dtype=ml_dtypes.bfloat16),
    "BYTES": np.array([[b"a", b"\x00\xff", b""]], dtype=object),
}
#: What the HTTP JSON form cannot carry: tritonclient refuses BF16 as JSON, and non-UTF-8
#: bytes have no JSON string.
JSON_UNFIT = {"BF16", "BYTES"}


def http_round_trip(binary_in: bool, binary_out: bool, names: list[str]) -> httpclient.InferResult:
    inputs = []
    for datatype in names:
        tensor = httpclient.InferInput(f"in_{datatype}", list(ARRAYS[datatype].shape), datatype)
        tensor.set_data_from_numpy(ARRAYS[datatype], binary_data=binary_in)
        inputs.append(tensor)
    outputs = [httpclient.InferRequestedOutput(f"out_{d}", binary_data=binary_out) for d in names]
    body, json_size = httpclient.InferenceServerClient.generate_request_body(
        inputs, outputs=outputs, request_id="req-9", parameters={"custom": "v"}
    )
    header_length = parse_header_length(None if json_size is None else str(json_size), len(body))
    request = decode_infer_request(body, header_length)
    assert request.id == "req-9"
    assert request.parameters["custom"] == "v"
    for datatype in names:
        decoded = request.arrays()[f"in_{datatype}"]
        assert decoded.dtype == ARRAYS[datatype].dtype
        np.testing.assert_array_equal(decoded, ARRAYS[datatype])
    # An echo model: out_X = in_X, plus an output nobody asked for.
    produced: dict[str, Any] = {f"out_{d}": request.arrays()[f"in_{d}"] for d in names}
    produced["extra"] = np.zeros(2)
    response = build_infer_response(produced, request, model_name="echo", model_version="1")
    encoded = encode_infer_response(response, request)
    return httpclient.InferResult.from_response_body(
        encoded.body, header_length=encoded.header_length
    )


@pytest.mark.parametrize("binary_out", [True, False])
@pytest.mark.parametrize("binary_in", [True, False])
def test_tritonclient_http_round_trip(binary_in: bool, binary_out: bool) -> None:
    names = [d for d in ARRAYS if binary_in or d not in JSON_UNFIT]
    names = [d for d in names if binary_out or d not in JSON_UNFIT]
    result = http_round_trip(binary_in, binary_out, names)
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == (
        "echo",
        "1",
        "req-9",
    )
    assert [o["name"] for o in response["outputs"]] == [f"out_{d}" for d in names]
    for datatype in names:
        got = result.as_numpy(f"out_{datatype}")
        assert got.shape == ARRAYS[datatype].shape
        np.testing.assert_array_equal(got, ARRAYS[datatype])
        has_binary = "binary_data_size" in (result.get_output(f"out_{datatype}") or {}).get(
            "parameters", {}
        )
        assert has_binary is binary_out


def test_tritonclient_http_all_outputs_default_to_binary() -> None:
    """Without requested outputs tritonclient sets binary_data_output: true."""
    tensor = httpclient.InferInput("x", [3], "INT32")
    tensor.set_data_from_numpy(np.array([1, 2, 3], dtype=np.int32), binary_data=False)
    body, json_size = httpclient.InferenceServerClient.generate_request_body([tensor])
    assert json_size is None
    request = decode_infer_request(body)
    assert request.binary_data_output and request.outputs == ()
    response = build_infer_response(
        {"y": request.arrays()["x"] * 2, "z": np.array([b"ok"], dtype=object)},
        request,
        model_name="m",
    )
    encoded = encode_infer_response(response, request)
    assert encoded.header_length is not None
    result = httpclient.InferResult.from_response_body(
        encoded.body, header_length=encoded.header_length
    )
    assert result.as_numpy("y").tolist() == [2, 4, 6]
    assert result.as_numpy("z").tolist() == [b"ok"]


def test_tritonclient_grpc_round_trip() -> None:
    inputs = []
    for datatype, array in ARRAYS.items():
        tensor = grpcclient.InferInput(f"in_{datatype}", list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    outputs = [grpcclient.InferRequestedOutput(f"out_{d}") for d in reversed(ARRAYS)]
    theirs = grpc_utils._get_inference_request(
        model_name="echo",
        inputs=inputs,
        model_version="3",
        request_id="g-1",
        outputs=outputs,
        sequence_id=0,
        sequence_start=False,
        sequence_end=False,
        priority=0,
        timeout=None,
        parameters={"flag": True, "n": 4, "s": "x"},
    )
    message = pb.ModelInferRequest.FromString(theirs.SerializeToString())
    assert (message.model_name, message.model_version) == ("echo", "3")
    request = decode_model_infer_request(message)
    assert request.id == "g-1"
    assert dict(request.parameters) == {"flag": True, "n": 4, "s": "x"}
    for datatype, array in ARRAYS.items():
        np.testing.assert_array_equal(request.arrays()[f"in_{datatype}"], array)
    produced = {f"out_{d}": request.arrays()[f"in_{d}"] for d in ARRAYS}
    response = build_infer_response(produced, request, model_name="echo", model_version="3")
    wire = encode_model_infer_response(response).SerializeToString()
    result = grpcclient.InferResult(service_pb2.ModelInferResponse.FromString(wire))
    assert [o.name for o in result.get_response().outputs] == [f"out_{d}" for d in reversed(ARRAYS)]
    assert result.get_response().id == "g-1"
    for datatype, array in ARRAYS.items():
        got = result.as_numpy(f"out_{datatype}")
        assert got.dtype == array.dtype, datatype
        np.testing.assert_array_equal(got, array)
