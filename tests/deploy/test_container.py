"""The CPU image, built by docker/test.sh, run for real: predict, register, metrics, drain.

Opt-in (``docker/test.sh`` sets ``TORCHWICK_CONTAINER_IMAGE``); skipped with the reason
otherwise. The model store is a host folder mounted read-only; the archives are built here
with the project's ``torch-model-archiver``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch

from tests.deploy.container import (
    SKIP_REASON,
    Container,
    configured_image,
    run_container,
    wait_ready,
)
from tests.support.models import MLP, save_torchscript

pytestmark = [
    pytest.mark.container,
    pytest.mark.skipif(configured_image() is None, reason=SKIP_REASON),
]

STORE = "/home/model-server/model-store"
SYNC = "/sync"
READY_TIMEOUT_S = 180.0
ARCHIVER = Path(sys.executable).with_name("torch-model-archiver")
KEYS = {
    "inference": "container-inference-key-0123456789",
    "management": "container-management-key-0123456789",
}

#: TorchScript MLP: JSON {"x": [64 floats]} -> {"logits": [10 floats]}.
MLP_HANDLER = """
import json
import os

import torch

_model = {}


def handle(data, context):
    if not _model:
        model_dir = context.system_properties["model_dir"]
        _model["m"] = torch.jit.load(os.path.join(model_dir, "model.ts.pt")).eval()
    if data is None:
        return None
    out = []
    for row in data:
        body = row.get("body") if row.get("body") is not None else row.get("data")
        x = torch.tensor(json.loads(body)["x"], dtype=torch.float32)
        with torch.no_grad():
            out.append({"logits": _model["m"](x.unsqueeze(0))[0].tolist()})
    return out
"""

#: Holds each request until the test creates /sync/release (after touching /sync/started).
GATE_HANDLER = """
import os
import time


def handle(data, context):
    if data is None:
        return None
    open("/sync/started", "w").close()
    deadline = time.monotonic() + 120
    while not os.path.exists("/sync/release") and time.monotonic() < deadline:
        time.sleep(0.05)
    return ["released" for _ in data]
"""


def archive(tmp: Path, store: Path, name: str, handler: str, *extra: str) -> None:
    """Build ``store/<name>.mar`` with the project's console script."""
    handler_path = tmp / f"{name}_handler.py"
    handler_path.write_text(handler)
    config = tmp / f"{name}-config.yaml"
    config.write_text("minWorkers: 1\nmaxWorkers: 1\nresponseTimeout: 120\n")
    command = [str(ARCHIVER), "--model-name", name, "--version", "1.0"]
    command += ["--handler", str(handler_path), "--config-file", str(config)]
    command += ["--export-path", str(store), *extra]
    subprocess.run(command, check=True, capture_output=True)


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
            "TORCHWICK_LOAD_MODELS": "mlp.mar",
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
    assert {m["modelName"] for m in listed.json()["models"]} == {"mlp", "gate"}
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
