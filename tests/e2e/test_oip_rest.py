"""The Open Inference Protocol over REST against a real server, driven by ``tritonclient.http``
(a real third-party client) and by plain HTTP for the error cases.

One server (secure defaults: token auth on) with an MLP whose model-config declares its
tensors. The same request must give the same answer over ``/predictions`` and OIP.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import torch
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from tests.support.models import MLP, save_torchscript
from tests.support.server import ServerOptions, ServerProcess, build_archive, running_server

HANDLER = """
from ts.torch_handler.base_handler import BaseHandler


class Handler(BaseHandler):
    pass
"""

MODEL_CONFIG = {
    "metadata": {
        "platform": "pytorch_torchscript",
        "inputs": [{"name": "input__0", "datatype": "FP32", "shape": [-1, 64]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}],
    }
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("oip")
    store = root / "model_store"
    store.mkdir()
    torch.manual_seed(0)
    source = root / "mlp_src"
    serialized = save_torchscript(MLP().eval(), source, torch.zeros(1, 64))
    build_archive(store, "mlp", HANDLER, serialized_file=source / serialized, config=MODEL_CONFIG)
    with running_server(root, ServerOptions(load_models="mlp.mar")) as process:
        yield process


@pytest.fixture
def triton(server: ServerProcess) -> Iterator[triton_http.InferenceServerClient]:
    url = server.inference_url.removeprefix("http://")
    client = triton_http.InferenceServerClient(url)
    yield client
    client.close()


def _auth(server: ServerProcess) -> dict[str, str]:
    return server.auth("inference")


def _sample() -> np.ndarray:
    return np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 64)


def test_health_and_metadata(
    server: ServerProcess, triton: triton_http.InferenceServerClient
) -> None:
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready("mlp", headers=_auth(server))
    meta = triton.get_model_metadata("mlp", headers=_auth(server))
    assert meta["name"] == "mlp" and meta["versions"] == ["1.0"]
    assert meta["platform"] == "pytorch_torchscript"
    assert meta["inputs"] == [{"name": "input__0", "datatype": "FP32", "shape": [-1, 64]}]
    assert meta["outputs"][0]["name"] == "logits"
    assert triton.get_server_metadata()["extensions"] == ["binary_tensor_data"]


@pytest.mark.parametrize(("binary_in", "binary_out"), [(False, False), (True, True), (True, False)])
def test_tritonclient_infer_matches_predictions(
    server: ServerProcess,
    triton: triton_http.InferenceServerClient,
    binary_in: bool,
    binary_out: bool,
) -> None:
    sample = _sample()
    tensor = triton_http.InferInput("input__0", list(sample.shape), "FP32")
    tensor.set_data_from_numpy(sample, binary_data=binary_in)
    wanted = triton_http.InferRequestedOutput("logits", binary_data=binary_out)
    result = triton.infer("mlp", [tensor], outputs=[wanted], headers=_auth(server))
    logits = result.as_numpy("logits")
    assert logits is not None and logits.dtype == np.float32 and logits.shape == (1, 10)
    with server.client("inference") as client:
        rest = client.post("/predictions/mlp", json=sample.tolist())
    assert rest.status_code == 200
    np.testing.assert_allclose(logits, np.asarray(rest.json(), dtype=np.float32), rtol=1e-5)
    assert result.get_response()["model_version"] == "1.0"
    # The OIP route's access-log line names the version that served it.
    log = server.workdir / "logs" / "access_log.log"
    deadline = time.monotonic() + 15
    while '"POST /v2/models/mlp/infer HTTP/1.1" 200' not in (
        log.read_text() if log.exists() else ""
    ):
        assert time.monotonic() < deadline, log.read_text() if log.exists() else "no log"
        time.sleep(0.05)
    line = next(x for x in log.read_text().splitlines() if "/v2/models/mlp/infer" in x)
    assert "model=mlp version=1.0 " in line, line


def test_token_is_required_for_inference(triton: triton_http.InferenceServerClient) -> None:
    tensor = triton_http.InferInput("input__0", [1, 64], "FP32")
    tensor.set_data_from_numpy(_sample())
    with pytest.raises(InferenceServerException) as caught:
        triton.infer("mlp", [tensor])
    assert "401" in str(caught.value.status()) or "Token" in str(caught.value.message())


def _post(server: ServerProcess, body: object, model: str = "mlp") -> httpx.Response:
    with server.client("inference") as client:
        return client.post(f"/v2/models/{model}/infer", content=json.dumps(body))


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (
            {"inputs": [{"name": "input__0", "shape": [2], "datatype": "FP32", "data": [1.0]}]},
            "input__0",
        ),
        (
            {"inputs": [{"name": "x", "shape": [1], "datatype": "FLOAT9", "data": [1.0]}]},
            "datatype",
        ),
        ({"inputs": []}, "input"),
        (
            {
                "inputs": [
                    {"name": "input__0", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}
                ],
                "outputs": [{"name": "nope"}],
            },
            "nope",
        ),
        (
            {
                "inputs": [
                    {"name": "input__0", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}
                ]
            },
            "shape [1, 3] given",
        ),
        (
            {"inputs": [{"name": "other", "shape": [1], "datatype": "FP32", "data": [1.0]}]},
            "no such input",
        ),
        (
            {
                "inputs": [
                    {"name": "input__0", "shape": [1, 64], "datatype": "INT32", "data": [1] * 64}
                ]
            },
            "datatype INT32 given",
        ),
    ],
)
def test_bad_requests_are_400_naming_the_tensor(
    server: ServerProcess, body: object, words: str
) -> None:
    with server.client("inference") as client:
        response = client.post(
            "/v2/models/mlp/infer",
            content=json.dumps(body),
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 400, response.text
    assert words in response.json()["error"]
    with server.client("inference") as client:  # the server and the model are still fine
        assert client.get("/v2/models/mlp/ready").status_code == 200


def test_malformed_binary_header_is_400(server: ServerProcess) -> None:
    with server.client("inference") as client:
        response = client.post(
            "/v2/models/mlp/infer",
            content=b'{"inputs": []}xxxx',
            headers={"inference-header-content-length": "999"},
        )
    assert response.status_code == 400
    assert "error" in response.json()


def test_unknown_model_is_404(server: ServerProcess) -> None:
    with server.client("inference") as client:
        assert client.get("/v2/models/nothing").status_code == 404
        missing = client.post(
            "/v2/models/nothing/infer",
            content=json.dumps(
                {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}
            ),
        )
    assert missing.status_code == 404 and "nothing" in missing.json()["error"]


# -- the same model over gRPC: KServe v2 (tritonclient.grpc) and TorchServe's Predictions ------


def test_tritonclient_grpc_matches_rest(
    server: ServerProcess, triton: triton_http.InferenceServerClient
) -> None:
    import tritonclient.grpc as triton_grpc

    sample = _sample()
    client = triton_grpc.InferenceServerClient(server.grpc_target("inference"))
    try:
        assert client.is_server_live() and client.is_server_ready()
        auth = {"authorization": _auth(server)["Authorization"]}  # gRPC keys are lower-case
        assert client.is_model_ready("mlp", headers=auth)
        meta = client.get_model_metadata("mlp", headers=auth, as_json=True)
        assert meta["inputs"][0]["name"] == "input__0" and meta["platform"] == "pytorch_torchscript"
        tensor = triton_grpc.InferInput("input__0", list(sample.shape), "FP32")
        tensor.set_data_from_numpy(sample)
        result = client.infer("mlp", [tensor], headers=auth)
        over_grpc = result.as_numpy("logits")
        with pytest.raises(InferenceServerException) as denied:
            client.infer("mlp", [tensor])
        assert "UNAUTHENTICATED" in str(denied.value.status())
        bad = triton_grpc.InferInput("input__0", [1, 3], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
        with pytest.raises(InferenceServerException) as refused:
            client.infer("mlp", [bad], headers=auth)
        assert "INVALID_ARGUMENT" in str(refused.value.status())
        assert "shape [1, 3] given" in str(refused.value.message())
        with pytest.raises(InferenceServerException) as unknown:
            client.get_model_metadata("nothing", headers=auth)
        assert "NOT_FOUND" in str(unknown.value.status())
    finally:
        client.close()

    rest_tensor = triton_http.InferInput("input__0", list(sample.shape), "FP32")
    rest_tensor.set_data_from_numpy(sample, binary_data=True)
    over_rest = triton.infer("mlp", [rest_tensor], headers=_auth(server)).as_numpy("logits")
    assert over_grpc is not None and over_rest is not None
    np.testing.assert_array_equal(over_grpc, over_rest)

    import grpc

    from torchwick.server.grpc._generated import inference_pb2, inference_pb2_grpc

    with grpc.insecure_channel(server.grpc_target("inference")) as channel:
        stub = inference_pb2_grpc.InferenceAPIsServiceStub(channel)
        answer = stub.Predictions(
            inference_pb2.PredictionsRequest(
                model_name="mlp", input={"data": json.dumps(sample.tolist()).encode()}
            ),
            metadata=[("authorization", _auth(server)["Authorization"])],
        )
    np.testing.assert_allclose(
        np.asarray(json.loads(answer.prediction), dtype=np.float32), over_rest, rtol=1e-5
    )


# -- a handler written for TorchServe's kservev2 envelope, served over OIP ---------------------

KSERVEV2_HANDLER = """
import numpy as np


def handle(data, context):
    if data is None:
        return None
    # The envelope hands one item per input: {"name", "shape", "datatype", "data" (nested)}.
    return [(np.asarray(item["data"], dtype=np.float32) * 2).reshape(-1).tolist() for item in data]
"""


@pytest.fixture(scope="module")
def envelope_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("oip_kservev2")
    store = root / "model_store"
    store.mkdir()
    build_archive(store, "doubler", KSERVEV2_HANDLER)
    options = ServerOptions(load_models="doubler.mar", config={"service_envelope": "kservev2"})
    with running_server(root, options) as process:
        yield process


def test_kservev2_envelope_handler_works_over_oip(envelope_server: ServerProcess) -> None:
    client = triton_http.InferenceServerClient(
        envelope_server.inference_url.removeprefix("http://")
    )
    try:
        values = np.arange(6, dtype=np.float32).reshape(2, 3)
        tensor = triton_http.InferInput("x", [2, 3], "FP32")
        tensor.set_data_from_numpy(values, binary_data=True)
        result = client.infer("doubler", [tensor], headers=envelope_server.auth("inference"))
    finally:
        client.close()
    doubled = result.as_numpy("x")  # the envelope names output i after input i
    assert doubled is not None
    np.testing.assert_allclose(doubled.reshape(-1), values.reshape(-1) * 2)
