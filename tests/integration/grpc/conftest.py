"""One real server for the gRPC tests (token auth on, the product default; model API on),
with the archives they use loaded at start, and typed stubs on real channels."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from tests.integration.grpc import grpc_handlers as handlers
from tests.integration.server import model_handlers as rest_handlers
from tests.support.server import ServerOptions, ServerProcess, build_archive, running_server
from torchwick.server.grpc._generated import inference_pb2_grpc, management_pb2_grpc


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("grpc")
    store = root / "model_store"
    log = root / "ticks.log"
    build_archive(store, "echo", rest_handlers.ECHO)
    build_archive(store, "inspect", rest_handlers.INSPECT)
    build_archive(store, "status", rest_handlers.STATUS)
    build_archive(store, "stream", rest_handlers.STREAM)
    build_archive(store, "ticks", handlers.ticks_handler(str(log)))
    options = ServerOptions(
        enable_model_api=True,
        load_models="echo=echo.mar,inspect=inspect.mar,status=status.mar,"
        "stream=stream.mar,ticks=ticks.mar",
    )
    with running_server(root, options) as process:
        yield process


@pytest.fixture(scope="package")
def inference_channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc_target("inference")) as channel:
        yield channel


@pytest.fixture(scope="package")
def management_channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc_target("management")) as channel:
        yield channel


@pytest.fixture
def inference(inference_channel: grpc.Channel) -> inference_pb2_grpc.InferenceAPIsServiceStub:
    return inference_pb2_grpc.InferenceAPIsServiceStub(inference_channel)


@pytest.fixture
def management(
    management_channel: grpc.Channel,
) -> management_pb2_grpc.ManagementAPIsServiceStub:
    return management_pb2_grpc.ManagementAPIsServiceStub(management_channel)
