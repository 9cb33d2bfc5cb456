"""Issue 9 handler compatibility through real servers and workers: a grayscale image
handler, TorchServe's MNIST-style and custom-metrics handlers, an ``async def`` handler, the
``kserve`` and ``kservev2`` envelopes (``service_envelope`` in config.properties), and a
TorchServe-style handler unit test run by pytest outside any worker."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch

from tests.support.compat_handlers import (
    ASYNC_FUNCTION_HANDLER,
    CUSTOM_METRICS_HANDLER,
    METRICS_YAML,
    MNIST_HANDLER,
    MODE_HANDLER,
    MnistNet,
    gray_png,
    gray_tensor,
)
from tests.support.models import save_eager
from tests.support.server import ServerOptions, ServerProcess, build_archive, running_server
from torchwick.server.workers import ipc

TIMEOUT_S = 60.0
ONE_WORKER = {"minWorkers": 1, "maxWorkers": 1, "batchSize": 1}
#: The server carries metrics_config into the worker's LoadSpec (issue 9, server side).
SERVER_PASSES_METRICS_CONFIG = "metrics_config" in ipc._LOAD_FIELDS


def _mnist_archives(store: Path, net: MnistNet, sources: Path) -> None:
    model_file, weights = save_eager(net, sources)
    for name, source in (
        ("mnist", MNIST_HANDLER),
        ("modes", MODE_HANDLER),
        ("custom_metrics", CUSTOM_METRICS_HANDLER),
    ):
        build_archive(
            store,
            name,
            source,
            config=ONE_WORKER,
            model_file=sources / model_file,
            serialized_file=sources / weights,
        )


def _serve(root: Path, envelope: str | None) -> Iterator[tuple[ServerProcess, MnistNet]]:
    """A server started with ``torchserve --start`` whose store holds symlinks to archives
    built elsewhere (how TorchServe's tooling and many deployments fill a store)."""
    torch.manual_seed(0)
    net = MnistNet().eval()
    built = root / "built"
    built.mkdir()
    _mnist_archives(built, net, root / "weights")
    build_archive(built, "asyncecho", ASYNC_FUNCTION_HANDLER, config=ONE_WORKER)
    store = root / "model_store"
    store.mkdir()
    for archive in sorted(built.glob("*.mar")):
        (store / archive.name).symlink_to(archive)
    (root / "metrics.yaml").write_text(METRICS_YAML)
    config = {"metrics_config": str(root / "metrics.yaml")}
    if envelope:
        config["service_envelope"] = envelope
    options = ServerOptions(
        disable_token_auth=True, load_models="all", config=config, launcher="start"
    )
    with running_server(root, options) as server:
        yield server, net


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, MnistNet]]:
    yield from _serve(tmp_path_factory.mktemp("plain"), None)


def _post(server: ServerProcess, path: str, **kwargs: object) -> httpx.Response:
    with server.client(timeout=TIMEOUT_S) as client:
        return client.post(path, **kwargs)  # type: ignore[arg-type]


def test_grayscale_and_mnist_style_handler(plain: tuple[ServerProcess, MnistNet]) -> None:
    server, net = plain
    png = gray_png(3)
    probe = _post(server, "/predictions/modes", content=png)
    assert probe.status_code == 200, probe.text
    assert probe.json() == {"mode": "L", "shape": [1, 28, 28]}
    digit = _post(server, "/predictions/mnist", content=png)
    with torch.no_grad():
        expected = int(net(gray_tensor(png).unsqueeze(0)).argmax(1))
    assert digit.status_code == 200 and digit.json() == expected


def test_async_handler(plain: tuple[ServerProcess, MnistNet]) -> None:
    server, _ = plain
    answer = _post(server, "/predictions/asyncecho", content=b"hello")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"async": True, "ready": True, "n": 1}


@pytest.mark.skipif(
    not SERVER_PASSES_METRICS_CONFIG,
    reason="the server does not pass metrics_config into LoadSpec yet (issue 9, server side)",
)
def test_custom_metrics_handler(plain: tuple[ServerProcess, MnistNet]) -> None:
    server, _ = plain
    answer = _post(server, "/predictions/custom_metrics", content=gray_png(1))
    assert answer.status_code == 200, answer.text
    with server.client("metrics", timeout=TIMEOUT_S) as client:
        text = client.get("/metrics").text
    assert 'RequestBatchSize{ModelName="custom_metrics"' in text


@pytest.fixture(scope="module")
def kserve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, MnistNet]]:
    yield from _serve(tmp_path_factory.mktemp("kserve"), "kserve")


def test_kserve_envelope(kserve: tuple[ServerProcess, MnistNet]) -> None:
    server, net = kserve
    tensor = gray_tensor(gray_png(5))
    body = {"instances": [{"data": tensor.tolist()}]}
    answer = _post(server, "/predictions/mnist", json=body)
    assert answer.status_code == 200, answer.text
    with torch.no_grad():
        expected = int(net(tensor.unsqueeze(0)).argmax(1))
    assert answer.json() == {"predictions": [expected]}
    bad = _post(
        server, "/predictions/mnist", content=b"{oops", headers={"content-type": "application/json"}
    )
    assert bad.status_code == 400 and "kserve" in bad.json()["message"]
    assert _post(server, "/predictions/mnist", json=body).status_code == 200


@pytest.fixture(scope="module")
def kservev2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, MnistNet]]:
    yield from _serve(tmp_path_factory.mktemp("kservev2"), "kservev2")


def test_kservev2_envelope(kservev2: tuple[ServerProcess, MnistNet]) -> None:
    server, net = kservev2
    tensor = gray_tensor(gray_png(6))
    body = {
        "id": "test-id",
        "inputs": [
            {"name": "img", "shape": [1, 28, 28], "datatype": "FP32", "data": tensor.tolist()}
        ],
    }
    answer = _post(server, "/predictions/mnist", json=body)
    assert answer.status_code == 200, answer.text
    with torch.no_grad():
        expected = int(net(tensor.unsqueeze(0)).argmax(1))
    result = answer.json()
    assert result["id"] == "test-id" and result["model_name"] == "mnist"
    assert result["outputs"] == [
        {"name": "img", "datatype": "INT64", "data": [expected], "shape": [1]}
    ]
    bad = _post(server, "/predictions/mnist", json={"inputs": "nope"})
    assert bad.status_code == 400 and "inputs" in bad.json()["message"]


USER_TEST = """
    from ts.torch_handler.base_handler import BaseHandler
    from ts.torch_handler.unit_tests.models.base_model import save_pt_file
    from ts.torch_handler.unit_tests.test_utils.mock_context import MockContext
    import ts.torch_handler.unit_tests.models.base_model as base_model


    def test_handle(tmp_path):
        (tmp_path / "model.py").write_text(open(base_model.__file__).read())
        save_pt_file(str(tmp_path / "model.pt"))
        context = MockContext(model_dir=str(tmp_path), model_file="model.py")
        handler = BaseHandler()
        handler.initialize(context)
        assert handler.handle([[1.0, 2.0], [4.0, 3.0]], context) == [1, 0]
"""


def test_handler_unit_test_with_ts_helpers_outside_a_worker(tmp_path: Path) -> None:
    (tmp_path / "test_user_handler.py").write_text(textwrap.dedent(USER_TEST))
    (tmp_path / "conftest.py").write_text(
        'pytest_plugins = ["torchwick.handlers.compat.pytest_plugin"]\n'
    )
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S * 2,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout
