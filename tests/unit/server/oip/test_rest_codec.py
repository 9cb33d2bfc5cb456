"""REST codec: JSON tensor format, binary extension framing and response encoding."""

from __future__ import annotations

import json
import struct
from typing import Any

import ml_dtypes
import numpy as np
import pytest

from torchwick.server.errors import ERROR_TABLE, InvalidInferRequest, InvalidTensor
from torchwick.server.oip import (
    HEADER_LENGTH,
    build_infer_response,
    decode_infer_request,
    encode_infer_response,
    parse_header_length,
)


def body_of(document: dict[str, Any], *blobs: bytes) -> tuple[bytes, int | None]:
    header = json.dumps(document).encode()
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)


def one_input(**tensor: Any) -> bytes:
    return json.dumps({"inputs": [{"name": "x", **tensor}]}).encode()


JSON_CASES = [
    ("BOOL", [True, False], np.bool_),
    ("UINT8", [0, 255], np.uint8),
    ("UINT16", [0, 65535], np.uint16),
    ("UINT32", [0, 2**32 - 1], np.uint32),
    ("UINT64", [0, 2**64 - 1], np.uint64),
    ("INT8", [-128, 127], np.int8),
    ("INT16", [-(2**15), 2**15 - 1], np.int16),
    ("INT32", [-(2**31), 2**31 - 1], np.int32),
    ("INT64", [-(2**63), 2**63 - 1], np.int64),
    ("FP16", [1.5, -2], np.float16),
    ("FP32", [1.25, 3], np.float32),
    ("FP64", [1e300, -0.5], np.float64),
    ("BF16", [1.5, -2.0], ml_dtypes.bfloat16),
]


@pytest.mark.parametrize(("datatype", "values", "dtype"), JSON_CASES)
def test_every_fixed_datatype_decodes_from_json(
    datatype: str, values: list[Any], dtype: Any
) -> None:
    request = decode_infer_request(one_input(datatype=datatype, shape=[2], data=values))
    array = request.arrays()["x"]
    assert array.dtype == np.dtype(dtype)
    assert array.shape == (2,)
    np.testing.assert_array_equal(
        array.astype(np.float64 if datatype != "UINT64" else np.uint64),
        np.array(values, dtype=np.float64 if datatype != "UINT64" else np.uint64),
    )


def test_bytes_decode_to_utf8_object_array_and_nested_data_is_accepted() -> None:
    request = decode_infer_request(
        one_input(datatype="BYTES", shape=[2, 2], data=[["a", "é"], ["", "zz"]])
    )
    array = request.arrays()["x"]
    assert array.dtype == object
    assert array.tolist() == [[b"a", "é".encode()], [b"", b"zz"]]


def test_request_fields_are_kept() -> None:
    body = json.dumps(
        {
            "id": "r-1",
            "parameters": {"binary_data_output": True, "custom": 3},
            "inputs": [
                {
                    "name": "a",
                    "datatype": "INT32",
                    "shape": [1, 3],
                    "data": [1, 2, 3],
                    "parameters": {"note": "x"},
                },
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": False}}, {"name": "z"}],
        }
    ).encode()
    request = decode_infer_request(body)
    assert request.id == "r-1"
    assert request.binary_data_output is True
    assert dict(request.parameters) == {"binary_data_output": True, "custom": 3}
    assert request.inputs[0].shape == (1, 3)
    assert dict(request.inputs[0].parameters) == {"note": "x"}
    assert [(o.name, o.binary_data) for o in request.outputs] == [("y", False), ("z", None)]


BAD_JSON_TENSORS = [
    ({"datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3]}, "needs 4 elements, data has 3"),
    ({"datatype": "FP32", "shape": [2, 2], "data": [[1, 2], [3]]}, "nested data has shape [2],"),
    ({"datatype": "FP32", "shape": [4], "data": [[1, 2], [3, 4]]}, "nested data has shape [2, 2]"),
    ({"datatype": "INT8", "shape": [1], "data": [128]}, "out of range for INT8"),
    ({"datatype": "UINT8", "shape": [1], "data": [-1]}, "out of range for UINT8"),
    ({"datatype": "INT32", "shape": [1], "data": [1.5]}, "must be integers, found number"),
    ({"datatype": "INT32", "shape": [2], "data": [1, True]}, "must be integers, found boolean"),
    ({"datatype": "FP32", "shape": [1], "data": ["1.0"]}, "must be numbers, found string"),
    ({"datatype": "BOOL", "shape": [1], "data": [1]}, "must be true or false, found integer"),
    ({"datatype": "BYTES", "shape": [1], "data": [3]}, "must be strings, found integer"),
    ({"datatype": "FP32", "shape": [1], "data": [None]}, "found null"),
    ({"datatype": "FP32", "shape": [1], "data": 1.0}, "data must be a JSON array"),
    ({"datatype": "FP33", "shape": [1], "data": [1]}, "datatype must be one of"),
    ({"datatype": "FP32", "shape": [-1], "data": []}, "dimension out of range"),
    ({"datatype": "FP32", "shape": [2**63], "data": []}, "dimension out of range"),
    ({"datatype": "FP32", "shape": [1.0], "data": [1]}, "non-integer"),
    ({"datatype": "FP32", "shape": "2", "data": [1, 2]}, "shape must be a list"),
    ({"datatype": "FP32", "data": [1]}, "needs a 'shape'"),
    ({"datatype": "FP32", "shape": [1]}, "neither 'data' nor"),
    # A huge declared shape is compared, not allocated.
    ({"datatype": "FP32", "shape": [2**62, 2**62], "data": [1]}, "elements, data has 1"),
    (
        {
            "datatype": "FP32",
            "shape": [1],
            "data": [1],
            "parameters": {"shared_memory_region": "r"},
        },
        "shared-memory",
    ),
]


@pytest.mark.parametrize(("tensor", "problem"), BAD_JSON_TENSORS)
def test_bad_json_tensor_names_the_tensor(tensor: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidTensor) as caught:
        decode_infer_request(one_input(**tensor))
    assert caught.value.tensor == "x"
    assert caught.value.role == "input"
    assert problem in caught.value.problem
    assert caught.value.message.startswith("input 'x': ")
    assert caught.value.status.http_status == 400
    assert caught.value.status.grpc_code == "INVALID_ARGUMENT"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"{not json", "malformed"),
        (b"\xff\xfe", "malformed"),
        (b"[1]", "must be a JSON object"),
        (b"{}", "'inputs' must be a non-empty list"),
        (b'{"inputs": [3]}', "inputs[0] must be an object"),
        (b'{"inputs": [{"datatype": "FP32"}]}', "non-empty string 'name'"),
        (b'{"id": 3, "inputs": []}', "'id' must be a string"),
        (b'{"parameters": [], "inputs": []}', "'parameters' must be an object"),
        (b'{"parameters": {"a": {"b": 1}}, "inputs": []}', "string, number or boolean"),
        (b'{"parameters": {"binary_data_output": 1}, "inputs": []}', "true or false"),
        (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
    ],
)
def test_malformed_json_header_is_a_typed_error(body: bytes, problem: str) -> None:
    with pytest.raises(InvalidInferRequest) as caught:
        decode_infer_request(body)
    assert problem in caught.value.message


def test_duplicate_names_and_output_parameters_are_refused() -> None:
    x = {"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}
    with pytest.raises(InvalidTensor, match="appears twice"):
        decode_infer_request(json.dumps({"inputs": [x, x]}).encode())
    for outputs, problem in [
        ([{"name": "y"}, {"name": "y"}], "appears twice"),
        ([{"name": "y", "parameters": {"binary_data": "yes"}}], "true or false"),
        ([{"name": "y", "parameters": {"classification": 3}}], "not supported"),
    ]:
        with pytest.raises(InvalidTensor) as caught:
            decode_infer_request(json.dumps({"inputs": [x], "outputs": outputs}).encode())
        assert (caught.value.tensor, caught.value.role) == ("y", "output")
        assert problem in caught.value.problem


def test_binary_inputs_follow_the_header_in_order() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([True, False])
    strings = struct.pack("<I", 2) + b"hi" + struct.pack("<I", 0)
    document = {
        "inputs": [
            {
                "name": "a",
                "datatype": "FP32",
                "shape": [2, 3],
                "parameters": {"binary_data_size": a.nbytes},
            },
            {"name": "j", "datatype": "INT64", "shape": [1], "data": [7]},
            {"name": "b", "datatype": "BOOL", "shape": [2], "parameters": {"binary_data_size": 2}},
            {
                "name": "s",
                "datatype": "BYTES",
                "shape": [2],
                "parameters": {"binary_data_size": len(strings)},
            },
        ]
    }
    body, length = body_of(document, a.tobytes(), b.tobytes(), strings)
    arrays = decode_infer_request(body, parse_header_length(str(length), len(body))).arrays()
    np.testing.assert_array_equal(arrays["a"], a)
    assert not arrays["a"].flags.writeable  # a zero-copy view of the body
    np.testing.assert_array_equal(arrays["b"], b)
    assert arrays["j"].tolist() == [7]
    assert arrays["s"].tolist() == [b"hi", b""]


def binary_one(datatype: str, shape: list[int], declared: int, blob: bytes) -> tuple[bytes, int]:
    doc = {
        "inputs": [
            {
                "name": "x",
                "datatype": datatype,
                "shape": shape,
                "parameters": {"binary_data_size": declared},
            }
        ]
    }
    body, length = body_of(doc, blob)
    assert length is not None
    return body, length


@pytest.mark.parametrize(
    ("datatype", "shape", "declared", "blob", "problem"),
    [
        ("FP32", [2], 1 << 40, b"\0" * 8, "only 8 bytes of binary data remain"),
        ("FP32", [3], 8, b"\0" * 8, "needs 12 bytes of raw data, got 8"),
        ("FP32", [2**40], 8, b"\0" * 8, "got 8"),
        ("BOOL", [2], 2, b"\x01\x02", "other than 0 or 1"),
        ("BYTES", [1], 3, b"\x05\0\0", "truncated length"),
        ("BYTES", [1], 6, b"\x05\0\0\0ab", "past the end"),
        ("BYTES", [1], 10, b"\x01\0\0\0a\x01\0\0\0b", "more than 1 elements"),
        ("BYTES", [3], 5, b"\x01\0\0\0a", "holds 1 elements, shape needs 3"),
        ("FP32", [1], -4, b"", "non-negative integer"),
    ],
)
def test_bad_binary_data_is_a_typed_error(
    datatype: str, shape: list[int], declared: int, blob: bytes, problem: str
) -> None:
    body, length = binary_one(datatype, shape, declared, blob)
    with pytest.raises(InvalidTensor) as caught:
        decode_infer_request(body, length)
    assert caught.value.tensor == "x"
    assert problem in caught.value.problem


def test_binary_framing_errors() -> None:
    body, length = binary_one("FP32", [1], 4, b"\0" * 4)
    with pytest.raises(InvalidInferRequest, match="8 bytes follow the JSON header"):
        decode_infer_request(body + b"\0" * 8, length)
    with pytest.raises(InvalidTensor, match=HEADER_LENGTH):
        decode_infer_request(body[:length])  # binary_data_size without the header
    with pytest.raises(InvalidInferRequest, match="malformed"):
        decode_infer_request(body, length - 1)
    for value in ("abc", "-1", "1e3", "٣"):
        with pytest.raises(InvalidInferRequest, match="non-negative integer"):
            parse_header_length(value, 100)
    with pytest.raises(InvalidInferRequest, match="only 10 bytes"):
        parse_header_length("11", 10)
    assert parse_header_length(None, 10) is None
    assert parse_header_length(" 7 ", 10) == 7


def test_new_errors_are_in_the_error_table() -> None:
    for cls in (InvalidInferRequest, InvalidTensor):
        assert ERROR_TABLE[cls].http_status == 400


def test_response_json_and_binary_outputs() -> None:
    x = {"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}
    request = decode_infer_request(
        json.dumps(
            {
                "id": "q",
                "inputs": [x],
                "outputs": [{"name": "p", "parameters": {"binary_data": True}}, {"name": "t"}],
            }
        ).encode()
    )
    produced = {
        "t": np.array([["a", "b"]], dtype=object),
        "p": np.arange(3, dtype=np.int16),
        "unused": np.zeros(1),
    }
    response = build_infer_response(produced, request, model_name="m", model_version="2")
    encoded = encode_infer_response(response, request)
    assert encoded.header_length is not None
    assert encoded.headers() == {
        "Content-Type": "application/octet-stream",
        HEADER_LENGTH: str(encoded.header_length),
    }
    header = json.loads(encoded.body[: encoded.header_length])
    assert header == {
        "model_name": "m",
        "model_version": "2",
        "id": "q",
        "outputs": [
            {"name": "p", "datatype": "INT16", "shape": [3], "parameters": {"binary_data_size": 6}},
            {"name": "t", "datatype": "BYTES", "shape": [1, 2], "data": ["a", "b"]},
        ],
    }
    assert encoded.body[encoded.header_length :] == np.arange(3, dtype="<i2").tobytes()

    json_only = encode_infer_response(
        build_infer_response(
            {"t": np.array([1.5], dtype=np.float16)},
            decode_infer_request(one_input(datatype="FP32", shape=[1], data=[1])),
            model_name="m",
        ),
        decode_infer_request(one_input(datatype="FP32", shape=[1], data=[1])),
    )
    assert json_only.header_length is None
    assert json_only.content_type == "application/json"
    assert json.loads(json_only.body)["outputs"][0]["data"] == [1.5]


def test_non_utf8_bytes_output_must_be_binary() -> None:
    request = decode_infer_request(one_input(datatype="FP32", shape=[1], data=[1]))
    response = build_infer_response(
        {"y": np.array([b"\xff"], dtype=object)}, request, model_name="m"
    )
    with pytest.raises(InvalidTensor) as caught:
        encode_infer_response(response, request)
    assert (caught.value.tensor, caught.value.role) == ("y", "output")
