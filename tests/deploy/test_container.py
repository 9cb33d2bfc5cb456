"""The CPU image, built by docker/test.sh, run for real: predict, register, metrics, drain,
and the protocols KServe's ServingRuntime relies on (Open Inference Protocol over REST and
gRPC, TorchServe's gRPC Predictions).

Opt-in (``docker/test.sh`` sets ``TORCHWICK_CONTAINER_IMAGE``); skipped with the reason
otherwise. The model store is a host folder mounted read-only; the archives are built here
with the project's ``torch-model-archiver``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import torch
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from tests.deploy.container import (
    SKIP_REASON,
    Container,
    configured_image,
    run_container,
    wait_ready,
)
from tests.deploy.container_models import (
    GATE_HANDLER,
    MLP_HANDLER,
    OIP_HANDLER,
    OIP_METADATA,
    archive,
)
from tests.support.models import MLP, save_torchscript
from torchwick.server.grpc._generated import (
    inference_pb2,
    inference_pb2_grpc,
    management_pb2,
    management_pb2_grpc,
)

pytestmark = [
    pytest.mark.container,
    pytest.mark.skipif(configured_image() is None, reason=SKIP_REASON),
]

STORE = "/home/model-server/model-store"
SYNC = "/sync"
READY_TIMEOUT_S = 180.0
KEYS = {
    "inference": "container-inference-key-0123456789",
    "management": "container-management-key-0123456789",
}


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("container")
    store, logs, sync, secrets = (root / n for n in ("store", "logs", "sync", "secrets"))
    for folder in (store, logs, sync, secrets):
        folder.mkdir()
    torch.manual_seed(0)
    model = MLP()
    serialized = save_torchscript(model, root / "mlp", torch.zeros(1, 64))
    archive(root, store, "mlp", MLP_HANDLER, "--serialized-file", str(root / "mlp" / serialized))
    archive(root, store, "gate", GATE_HANDLER)
    archive(
        root,
        store,
        "mlp_oip",
        OIP_HANDLER,
        "--serialized-file",
        str(root / "mlp" / serialized),
        metadata=OIP_METADATA,
    )
    (secrets / "tokens.json").write_text(json.dumps(KEYS))
    # The container runs as uid 1000: it must write logs and the sync files, read the secret.
    for folder in (logs, sync):
        folder.chmod(0o777)
    (secrets / "tokens.json").chmod(0o644)
    x = [float(i % 7) / 7 for i in range(64)]
    expected = model(torch.tensor([x]))[0].tolist()
    (root / "expected.json").write_text(json.dumps({"x": x, "logits": expected}))
    return {"root": root, "store": store, "logs": logs, "sync": sync, "secrets": secrets}


@pytest.fixture(scope="module")
def served(layout: dict[str, Path]) -> Iterator[Container]:
    """The image with the preset token secret, mlp loaded at start, the model API enabled."""
    image = configured_image()
    assert image is not None
    container = run_container(
        image,
        volumes=[
            (layout["store"], STORE, "ro"),
            (layout["logs"], "/home/model-server/logs", "rw"),
            (layout["sync"], SYNC, "rw"),
            (layout["secrets"], "/run/secrets/torchwick", "ro"),
        ],
        environment={
            "TORCHWICK_TOKEN_FILE": "/run/secrets/torchwick/tokens.json",
            "TORCHWICK_LOAD_MODELS": "mlp.mar,mlp_oip.mar",
        },
        args=["--enable-model-api"],
    )
    try:
        wait_ready(container, READY_TIMEOUT_S)
        yield container
    finally:
        container.remove()


def bearer(kind: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[kind]}"}


def test_predict_needs_the_token_and_matches_the_model(
    served: Container, layout: dict[str, Path]
) -> None:
    expected = json.loads((layout["root"] / "expected.json").read_text())
    url = served.url("inference") + "/predictions/mlp"
    body = json.dumps({"x": expected["x"]})
    assert httpx.post(url, content=body, timeout=30).status_code == 401
    answer = httpx.post(url, content=body, headers=bearer("inference"), timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["logits"] == pytest.approx(expected["logits"], abs=1e-5)
    assert served.healthcheck() == 0


def sample_and_logits(layout: dict[str, Path]) -> tuple[np.ndarray, np.ndarray]:
    """The (1, 64) sample and the model's (1, 10) answer computed on the host."""
    expected = json.loads((layout["root"] / "expected.json").read_text())
    sample = np.asarray([expected["x"]], dtype=np.float32)
    return sample, np.asarray([expected["logits"]], dtype=np.float32)


def test_oip_health_and_model_metadata_over_rest(served: Container) -> None:
    inference = served.url("inference")
    ready = httpx.get(f"{inference}/v2/health/ready", timeout=30)  # no token: probes use it
    assert ready.status_code == 200 and ready.json() == {"ready": True}, ready.text
    assert httpx.get(f"{inference}/v2/health/live", timeout=30).status_code == 200
    assert httpx.get(f"{inference}/v2/models/mlp_oip", timeout=30).status_code == 401
    meta = httpx.get(f"{inference}/v2/models/mlp_oip", headers=bearer("inference"), timeout=30)
    assert meta.status_code == 200, meta.text
    document = meta.json()
    assert document["name"] == "mlp_oip" and document["versions"] == ["1.0"]
    assert document["platform"] == "pytorch_torchscript"
    assert document["inputs"] == [{"name": "input__0", "datatype": "FP32", "shape": [-1, 64]}]
    assert document["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_oip_infer_over_rest_with_tritonclient(
    served: Container, layout: dict[str, Path], binary: bool
) -> None:
    sample, logits = sample_and_logits(layout)
    client = triton_http.InferenceServerClient(served.url("inference").removeprefix("http://"))
    try:
        tensor = triton_http.InferInput("input__0", list(sample.shape), "FP32")
        tensor.set_data_from_numpy(sample, binary_data=binary)
        wanted = triton_http.InferRequestedOutput("logits", binary_data=binary)
        with pytest.raises(InferenceServerException):
            client.infer("mlp_oip", [tensor], outputs=[wanted])
        result = client.infer("mlp_oip", [tensor], outputs=[wanted], headers=bearer("inference"))
        # A shape the declaration does not allow is refused before it reaches the worker.
        bad = triton_http.InferInput("input__0", [1, 3], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32), binary_data=binary)
        with pytest.raises(InferenceServerException) as refused:
            client.infer("mlp_oip", [bad], headers=bearer("inference"))
    finally:
        client.close()
    answer = result.as_numpy("logits")
    assert answer is not None and answer.dtype == np.float32 and answer.shape == (1, 10)
    np.testing.assert_allclose(answer, logits, atol=1e-5)
    assert "shape [1, 3] given" in str(refused.value.message())


def test_oip_model_infer_over_grpc_with_tritonclient(
    served: Container, layout: dict[str, Path]
) -> None:
    target = served.grpc_target("inference")
    assert f"gRPC Inference API bound to grpc://{target}" in served.logs()
    sample, logits = sample_and_logits(layout)
    client = triton_grpc.InferenceServerClient(target)
    try:
        assert client.is_server_live() and client.is_server_ready()  # no key needed
        auth = {"authorization": bearer("inference")["Authorization"]}
        assert client.is_model_ready("mlp_oip", headers=auth)
        tensor = triton_grpc.InferInput("input__0", list(sample.shape), "FP32")
        tensor.set_data_from_numpy(sample)
        with pytest.raises(InferenceServerException) as denied:
            client.infer("mlp_oip", [tensor])
        result = client.infer("mlp_oip", [tensor], headers=auth)
    finally:
        client.close()
    assert "UNAUTHENTICATED" in str(denied.value.status())
    answer = result.as_numpy("logits")
    assert answer is not None and answer.shape == (1, 10)
    np.testing.assert_allclose(answer, logits, atol=1e-5)


def test_torchserve_grpc_predictions_and_list_models(
    served: Container, layout: dict[str, Path]
) -> None:
    sample, logits = sample_and_logits(layout)
    body = json.dumps({"x": sample[0].tolist()}).encode()
    with grpc.insecure_channel(served.grpc_target("inference")) as channel:
        stub = inference_pb2_grpc.InferenceAPIsServiceStub(channel)
        request = inference_pb2.PredictionsRequest(model_name="mlp", input={"data": body})
        with pytest.raises(grpc.RpcError) as denied:
            stub.Predictions(request, timeout=60)
        answer = stub.Predictions(
            request,
            metadata=[("authorization", bearer("inference")["Authorization"])],
            timeout=60,
        )
    assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
    prediction = json.loads(answer.prediction)
    np.testing.assert_allclose(np.asarray([prediction["logits"]]), logits, atol=1e-5)
    with grpc.insecure_channel(served.grpc_target("management")) as channel:
        management = management_pb2_grpc.ManagementAPIsServiceStub(channel)
        listed = management.ListModels(
            management_pb2.ListModelsRequest(),
            metadata=[("authorization", bearer("management")["Authorization"])],
            timeout=60,
        )
    assert {"mlp", "mlp_oip"} <= {m["modelName"] for m in json.loads(listed.msg)["models"]}


def test_register_from_the_mounted_store_and_scrape_metrics(served: Container) -> None:
    management = served.url("management")
    denied = httpx.post(f"{management}/models", params={"url": "gate.mar"}, timeout=30)
    assert denied.status_code == 401
    registered = httpx.post(
        f"{management}/models",
        params={"url": "gate.mar", "initial_workers": "1", "synchronous": "true"},
        headers=bearer("management"),
        timeout=READY_TIMEOUT_S,
    )
    assert registered.status_code == 200, registered.text
    listed = httpx.get(f"{management}/models", headers=bearer("management"), timeout=30)
    assert {m["modelName"] for m in listed.json()["models"]} == {"mlp", "mlp_oip", "gate"}
    metrics = httpx.get(served.url("metrics") + "/metrics", timeout=30)
    assert metrics.status_code == 200
    assert "ts_inference_requests_total" in metrics.text
    assert 'model_name="mlp"' in metrics.text


def test_sigterm_drains_the_request_in_flight_and_exits_0(
    served: Container, layout: dict[str, Path]
) -> None:
    if not (layout["store"] / "gate.mar").exists():
        pytest.fail("gate.mar missing from the store")
    sync = layout["sync"]
    result: dict[str, httpx.Response] = {}

    def call() -> None:
        result["answer"] = httpx.post(
            served.url("inference") + "/predictions/gate",
            content=b"x",
            headers=bearer("inference"),
            timeout=120,
        )

    models = httpx.get(
        served.url("management") + "/models", headers=bearer("management"), timeout=30
    )
    if "gate" not in {m["modelName"] for m in models.json()["models"]}:
        pytest.skip("gate was not registered (see the registration test)")
    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 60
    while not (sync / "started").exists():
        assert time.monotonic() < deadline, served.logs()[-6000:]
        time.sleep(0.05)
    served.signal("TERM")
    served.wait_for_log("stop requested; finishing in-flight requests", timeout=30)
    (sync / "release").touch()
    caller.join(timeout=120)
    assert result["answer"].status_code == 200, result["answer"].text
    assert result["answer"].text == "released"
    assert served.wait(timeout=120) == 0
    logs = served.logs()
    assert "torchwick stopped" in logs
    assert "token_file /run/secrets/torchwick/tokens.json" in logs
    # The server's own log went to the mounted logs volume.
    assert any(layout["logs"].iterdir()), os.listdir(layout["logs"])


def test_without_a_secret_keys_are_generated_and_their_file_is_logged(
    layout: dict[str, Path],
) -> None:
    image = configured_image()
    assert image is not None
    container = run_container(
        image, volumes=[(layout["store"], STORE, "ro")], args=["--models", "mlp.mar"]
    )
    try:
        logs = container.wait_for_log("Model server started.", READY_TIMEOUT_S)
        assert "keys written to /home/model-server/run/key_file.json" in logs
        expected = json.loads((layout["root"] / "expected.json").read_text())
        answer = httpx.post(
            container.url("inference") + "/predictions/mlp",
            content=json.dumps({"x": expected["x"]}),
            timeout=30,
        )
        assert answer.status_code == 401
        keys = json.loads(container.exec("cat", "/home/model-server/run/key_file.json"))
        inference = {"Authorization": f"Bearer {keys['inference']['key']}"}
        answer = httpx.post(
            container.url("inference") + "/predictions/mlp",
            content=json.dumps({"x": expected["x"]}),
            headers=inference,
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        # The model API is off in the image's configuration.
        registered = httpx.post(
            container.url("management") + "/models",
            params={"url": "gate.mar"},
            headers={"Authorization": f"Bearer {keys['management']['key']}"},
            timeout=30,
        )
        assert registered.status_code == 405, registered.text
        container.signal("TERM")
        assert container.wait(timeout=120) == 0
    finally:
        container.remove()
