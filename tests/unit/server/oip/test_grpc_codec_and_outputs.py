"""gRPC codec (typed contents, raw contents, errors) and response building."""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import pytest
import torch

from torchwick.server.errors import InternalError, InvalidInferRequest, InvalidTensor, UnknownOutput
from torchwick.server.grpc._generated import grpc_predict_v2_pb2 as pb
from torchwick.server.oip import (
    InferRequest,
    InputTensor,
    RequestedOutput,
    build_infer_response,
    decode_model_infer_request,
    encode_model_infer_response,
)

TYPED = [
    ("BOOL", "bool_contents", [True, False], np.bool_),
    ("INT8", "int_contents", [-128, 127], np.int8),
    ("INT16", "int_contents", [-5, 5], np.int16),
    ("INT32", "int_contents", [-(2**31), 1], np.int32),
    ("INT64", "int64_contents", [-(2**63), 1], np.int64),
    ("UINT8", "uint_contents", [0, 255], np.uint8),
    ("UINT16", "uint_contents", [0, 65535], np.uint16),
    ("UINT32", "uint_contents", [0, 2**32 - 1], np.uint32),
    ("UINT64", "uint64_contents", [0, 2**64 - 1], np.uint64),
    ("FP32", "fp32_contents", [0.5, -2.0], np.float32),
    ("FP64", "fp64_contents", [1e300, -2.0], np.float64),
    ("BYTES", "bytes_contents", [b"a", b"\xff"], object),
]


def request_with(datatype: str, shape: list[int], **contents: list[Any]) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name="m")
    tensor = message.inputs.add(name="x", datatype=datatype)
    tensor.shape.extend(shape)
    for field, values in contents.items():
        getattr(tensor.contents, field).extend(values)
    return message


@pytest.mark.parametrize(("datatype", "field", "values", "dtype"), TYPED)
def test_typed_contents_decode(datatype: str, field: str, values: list[Any], dtype: Any) -> None:
    message = request_with(datatype, [1, 2], **{field: values})
    array = decode_model_infer_request(message).arrays()["x"]
    assert array.dtype == np.dtype(dtype)
    assert array.shape == (1, 2)
    assert array.reshape(-1).tolist() == values


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        (
            request_with("FP32", [3], fp32_contents=[1.0]),
            "needs 3 elements, contents.fp32_contents has 1",
        ),
        (
            request_with("FP32", [1], int_contents=[1]),
            "belongs in contents.fp32_contents, not int_contents",
        ),
        (request_with("INT8", [1], int_contents=[300]), "out of range for INT8"),
        (request_with("FP16", [1], fp32_contents=[1.0]), "must be sent in raw_input_contents"),
        (request_with("FP99", [1]), "datatype must be one of"),
        (request_with("FP32", [-2]), "dimension out of range"),
    ],
)
def test_bad_grpc_inputs_name_the_tensor(message: pb.ModelInferRequest, problem: str) -> None:
    with pytest.raises(InvalidTensor) as caught:
        decode_model_infer_request(message)
    assert caught.value.tensor == "x"
    assert problem in caught.value.problem


def test_raw_contents_pairing_rules() -> None:
    message = request_with("FP16", [2])
    message.raw_input_contents.append(np.array([1, 2], dtype="<f2").tobytes())
    assert decode_model_infer_request(message).arrays()["x"].tolist() == [1.0, 2.0]
    message.raw_input_contents.append(b"")
    with pytest.raises(InvalidInferRequest, match="2 entries for 1 inputs"):
        decode_model_infer_request(message)
    mixed = request_with("FP32", [1], fp32_contents=[1.0])
    mixed.raw_input_contents.append(b"\0" * 4)
    with pytest.raises(InvalidTensor, match="has contents although raw_input_contents"):
        decode_model_infer_request(mixed)
    short = request_with("FP32", [2])
    short.raw_input_contents.append(b"\0" * 4)
    with pytest.raises(InvalidTensor, match="needs 8 bytes of raw data, got 4"):
        decode_model_infer_request(short)
    with pytest.raises(InvalidInferRequest, match="no inputs"):
        decode_model_infer_request(pb.ModelInferRequest(model_name="m"))


def test_parameters_and_requested_outputs() -> None:
    message = request_with("INT64", [1], int64_contents=[1])
    message.id = "i"
    message.parameters["a"].int64_param = 5
    message.parameters["b"].string_param = "s"
    out = message.outputs.add(name="y")
    out.parameters["c"].bool_param = True
    request = decode_model_infer_request(message)
    assert dict(request.parameters) == {"a": 5, "b": "s"}
    assert [(o.name, dict(o.parameters)) for o in request.outputs] == [("y", {"c": True})]
    message.parameters["empty"].Clear()
    with pytest.raises(InvalidInferRequest, match="'empty' has no bool, int64 or string value"):
        decode_model_infer_request(message)
    message.ClearField("parameters")
    message.outputs.add(name="y")
    with pytest.raises(InvalidTensor, match="appears twice"):
        decode_model_infer_request(message)


def plain_request(*outputs: str) -> InferRequest:
    x = InputTensor("x", "FP32", (1,), np.zeros(1, dtype=np.float32))
    return InferRequest(inputs=(x,), outputs=tuple(RequestedOutput(n) for n in outputs), id="r")


def test_requested_outputs_are_honoured_in_order() -> None:
    produced = {"a": np.zeros(1), "b": np.ones(2, dtype=np.int32), "c": np.zeros(3)}
    response = build_infer_response(produced, plain_request("c", "a"), model_name="m")
    assert [o.name for o in response.outputs] == ["c", "a"]
    assert response.id == "r"
    everything = build_infer_response(produced, plain_request(), model_name="m")
    assert [(o.name, o.datatype, o.shape) for o in everything.outputs] == [
        ("a", "FP64", (1,)),
        ("b", "INT32", (2,)),
        ("c", "FP64", (3,)),
    ]
    with pytest.raises(UnknownOutput) as caught:
        build_infer_response(produced, plain_request("a", "nope"), model_name="m")
    assert (caught.value.tensor, caught.value.available) == ("nope", ("a", "b", "c"))
    assert caught.value.message == "output 'nope': not produced by the model (outputs: a, b, c)"
    assert caught.value.status.http_status == 400


def test_torch_tensors_become_outputs() -> None:
    produced = {
        "f": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "h": torch.tensor([1.5], dtype=torch.bfloat16),
        "g": torch.ones(2, requires_grad=True) * 2,
        "b": torch.tensor([True]),
    }
    response = build_infer_response(produced, plain_request(), model_name="m")
    by_name = {o.name: o for o in response.outputs}
    assert (by_name["f"].datatype, by_name["f"].shape) == ("FP32", (2, 3))
    assert by_name["h"].datatype == "BF16"
    assert by_name["h"].data.dtype == np.dtype(ml_dtypes.bfloat16)
    assert by_name["h"].data.astype(np.float32).tolist() == [1.5]
    assert by_name["g"].data.tolist() == [2.0, 2.0]
    assert by_name["b"].datatype == "BOOL"
    message = encode_model_infer_response(response)
    assert (
        message.raw_output_contents[1]
        == torch.tensor([1.5], dtype=torch.bfloat16)
        .view(torch.int16)
        .numpy()
        .astype("<i2")
        .tobytes()
    )


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ([1, 2], "list is not a numpy array or torch tensor"),
        (np.array([1j]), "has no protocol datatype"),
        (np.array([3], dtype=object), "BYTES element of type int"),
    ],
)
def test_unsendable_outputs_are_internal_errors(value: object, problem: str) -> None:
    with pytest.raises(InternalError, match=problem):
        build_infer_response({"y": value}, plain_request(), model_name="m")


def test_big_endian_arrays_are_sent_little_endian() -> None:
    response = build_infer_response(
        {"y": np.array([1, 2], dtype=">i4")}, plain_request(), model_name="m", model_version="v"
    )
    message = encode_model_infer_response(response)
    assert message.outputs[0].datatype == "INT32"
    assert message.raw_output_contents[0] == np.array([1, 2], dtype="<i4").tobytes()
    assert (message.model_version, message.id) == ("v", "r")
