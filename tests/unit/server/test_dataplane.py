"""The data plane over real archives and a fake worker supervisor: status codes and texts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from torchwick.handlers.messages import PredictResponse
from torchwick.server.contracts import InferenceRequest, ModelPage, ModelRef, Outcome
from torchwick.server.dataplane import DataPlane, RegisterRequest
from torchwick.server.errors import (
    BadRequest,
    Conflict,
    ForbiddenOperation,
    ModelLoadFailed,
    ModelNotFound,
    ModelVersionNotFound,
    OutOfResources,
    RequestTimeout,
    ServiceUnavailable,
)
from torchwick.server.model_store import ModelStore
from torchwick.server.settings import Settings

from .registry.archives import build_archive
from .scheduling.fake_pool import FakePool, FakeSupervisor


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Env:
    def __init__(self, tmp_path: Path, **settings: Any) -> None:
        self.store = tmp_path / "store"
        self.store.mkdir()
        self.work = tmp_path / "work"
        self.settings = Settings(model_store=self.store, **settings)
        self.supervisor = FakeSupervisor()
        self.clock = Clock()
        self.plane = DataPlane(
            self.settings,
            self.supervisor,
            clock=self.clock,
            model_store=ModelStore(self.settings, work_root=self.work),
            cpu_count=2,
            accounting=self,
        )
        self.accounted: list[tuple[str, str | None, int]] = []

    def observe_inference(self, model: str, version: str | None, latency_us: int) -> None:
        self.accounted.append((model, version, latency_us))

    def pool(self, key: str = "echo_1.0") -> FakePool:
        return self.supervisor.pools[key]

    def workdirs(self) -> list[Path]:
        return sorted(self.work.iterdir()) if self.work.exists() else []


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    environment = Env(tmp_path)
    build_archive(environment.store)
    yield environment
    await environment.plane.close()


async def test_register_with_zero_workers(env: Env) -> None:
    result = await env.plane.register(RegisterRequest("echo.mar"))
    assert result.outcome is Outcome.DONE
    assert result.message == (
        'Model "echo" Version: 1.0 registered with 0 initial workers. '
        "Use scale workers API to add workers for the model."
    )
    described = env.plane.describe("echo", None)
    assert described[0].url == "echo.mar" and described[0].state == "STOPPED"
    with pytest.raises(ServiceUnavailable, match=r'^Model "echo" has no worker'):
        await env.plane.infer("echo", None, InferenceRequest("r"))
    with pytest.raises(ServiceUnavailable, match=r'^Model "echo" Version 1\.0" has no worker'):
        await env.plane.infer("echo", "1.0", InferenceRequest("r"))


async def test_register_synchronously_then_infer(env: Env) -> None:
    result = await env.plane.register(RegisterRequest("echo.mar", initial_workers=2))
    assert (result.outcome, result.message) == (
        Outcome.DONE,
        'Model "echo" Version: 1.0 registered with 2 initial workers',
    )
    assert env.pool().scale_calls == [(2, True)]
    response = await env.plane.infer("echo", None, InferenceRequest("abc"))
    assert response.body == b"abc"
    assert env.plane.model_ready("echo") and env.plane.healthy()
    assert not env.plane.ready()  # the startup models have not been tried yet
    assert response.model_name == "echo" and response.model_version == "1.0"
    config: Any = env.supervisor.configs["echo_1.0"]
    assert config.handler == "echo_handler.py"
    assert config.model_dir.startswith(str(env.work))


async def test_register_short_of_workers_is_206(tmp_path: Path) -> None:
    environment = Env(tmp_path)
    build_archive(environment.store)
    environment.supervisor.pool_options = {"max_startable": 1}
    result = await environment.plane.register(RegisterRequest("echo.mar", initial_workers=3))
    assert (result.outcome, result.message) == (Outcome.PARTIAL, "Workers scaling in progress...")
    await environment.plane.close()


async def test_register_asynchronously_is_202(env: Env) -> None:
    result = await env.plane.register(
        RegisterRequest("echo.mar", initial_workers=1, synchronous=False)
    )
    assert (result.outcome, result.message) == (Outcome.ACCEPTED, "Processing worker updates...")
    assert env.pool().scale_calls == [(1, False)]


async def test_failed_worker_start_unregisters_and_cleans_up(tmp_path: Path) -> None:
    environment = Env(tmp_path)
    build_archive(environment.store)
    environment.supervisor.pool_options = {"load_error": "No module named 'missing'"}
    with pytest.raises(
        ModelLoadFailed, match=r"^Failed to start workers for model echo version: 1\.0$"
    ):
        await environment.plane.register(RegisterRequest("echo.mar", initial_workers=1))
    with pytest.raises(ModelNotFound):
        environment.plane.describe("echo", None)
    assert environment.pool().closed
    assert environment.workdirs() == []
    # The archive itself stays in the store: it was not downloaded by this registration.
    assert (environment.store / "echo.mar").exists()
    await environment.plane.close()


async def test_conflict_leaves_no_extraction_behind(env: Env) -> None:
    await env.plane.register(RegisterRequest("echo.mar"))
    build_archive(env.store, file_name="again.mar")
    with pytest.raises(Conflict, match=r"Model version 1\.0 is already registered for model echo"):
        await env.plane.register(RegisterRequest("again.mar"))
    assert len(env.workdirs()) == 1


async def test_register_validation_errors(env: Env) -> None:
    with pytest.raises(BadRequest, match="Parameter url is required"):
        await env.plane.register(RegisterRequest(""))
    with pytest.raises(BadRequest, match="Invalid RuntimeType value: cpp"):
        await env.plane.register(RegisterRequest("echo.mar", runtime="cpp"))
    with pytest.raises(BadRequest, match="Invalid model name"):
        await env.plane.register(RegisterRequest("echo.mar", model_name="../evil"))
    assert env.workdirs() == []


async def test_versions_default_unregister_and_set_default(env: Env) -> None:
    build_archive(env.store, version="2.0", file_name="echo-v2.mar")
    await env.plane.register(RegisterRequest("echo.mar", initial_workers=1))
    await env.plane.register(RegisterRequest("echo-v2.mar", initial_workers=1))
    assert [d.version for d in env.plane.describe("echo", None, all_versions=True)] == [
        "1.0",
        "2.0",
    ]
    assert env.plane.list_models(100, 0) == ModelPage((ModelRef("echo", "echo.mar"),), None)
    with pytest.raises(ForbiddenOperation, match="Cannot remove default version for model echo"):
        await env.plane.unregister("echo", None)
    result = env.plane.set_default("echo", "2.0")
    assert result.message == 'Default version successfully updated for model "echo" to "2.0"'
    assert (await env.plane.infer("echo", None, InferenceRequest("x"))).body == b"x"
    assert env.pool("echo_2.0").batches == [["x"]]
    result = await env.plane.unregister("echo", "1.0")
    assert (result.outcome, result.message) == (Outcome.DONE, 'Model "echo" unregistered')
    assert env.pool("echo_1.0").closed
    with pytest.raises(ModelVersionNotFound):
        env.plane.describe("echo", "1.0")
    await env.plane.unregister("echo", None)
    with pytest.raises(ModelNotFound, match=r"^Model not found: echo$"):
        await env.plane.unregister("echo", None)
    assert env.workdirs() == []


async def test_downloaded_archive_is_removed_on_unregister(tmp_path: Path) -> None:
    environment = Env(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    archive = build_archive(elsewhere)
    await environment.plane.register(RegisterRequest(f"file://{archive}"))
    assert (environment.store / "echo.mar").exists()
    assert environment.plane.describe("echo", None)[0].url == f"file://{archive}"
    await environment.plane.unregister("echo", None)
    assert not (environment.store / "echo.mar").exists()
    assert archive.exists()
    await environment.plane.close()


async def test_scale(env: Env) -> None:
    await env.plane.register(RegisterRequest("echo.mar"))
    with pytest.raises(BadRequest, match=r"^max_worker cannot be less than min_worker\.$"):
        await env.plane.scale("echo", None, 3, 2, True)
    with pytest.raises(BadRequest, match="negative"):
        await env.plane.scale("echo", None, -1, None, True)
    result = await env.plane.scale("echo", None, 2, None, False)
    assert (result.outcome, result.message) == (Outcome.ACCEPTED, "Processing worker updates...")
    result = await env.plane.scale("echo", None, 3, 5, True)
    assert (result.outcome, result.message) == (Outcome.DONE, "Workers scaled to 3 for model: echo")
    result = await env.plane.scale("echo", "1.0", 1, None, True)
    assert result.message == "Workers scaled to 1 for model: echo, version: 1.0"
    described = env.plane.describe("echo", None)[0]
    assert (described.min_workers, described.max_workers) == (1, 1)
    env.pool().max_startable = 1
    result = await env.plane.scale("echo", None, 2, None, True)
    assert result.outcome is Outcome.PARTIAL
    with pytest.raises(ModelVersionNotFound):
        await env.plane.scale("echo", "9.9", 1, None, True)


async def test_scale_to_zero_fails_queued_requests(env: Env) -> None:
    await env.plane.register(RegisterRequest("echo.mar", initial_workers=1))
    gate = asyncio.Event()
    env.pool().gate = gate
    running = asyncio.create_task(env.plane.infer("echo", None, InferenceRequest("a")))
    await asyncio.sleep(0)
    queued = asyncio.create_task(env.plane.infer("echo", None, InferenceRequest("b")))
    await asyncio.sleep(0)
    await env.plane.scale("echo", None, 0, None, False)
    with pytest.raises(ServiceUnavailable):
        await queued
    gate.set()
    await running


async def test_describe_customized(env: Env) -> None:
    await env.plane.register(RegisterRequest("echo.mar"))
    with pytest.raises(ServiceUnavailable, match="has no worker to serve describe request"):
        await env.plane.describe_customized("echo", None)
    await env.plane.scale("echo", None, 1, None, True)
    described = await env.plane.describe_customized("echo", None)
    assert described[0].customized == {"owner": "fake"}


async def test_health(env: Env) -> None:
    await env.plane.register(RegisterRequest("echo.mar", initial_workers=2, synchronous=False))
    pool = env.pool()
    pool.ready_count = 1  # one worker still starting
    assert env.plane.healthy()
    env.clock.now += 121  # short for longer than startupTimeout
    assert not env.plane.healthy()
    pool.ready_count = 2
    assert env.plane.healthy()
    pool.ready_count, pool.failed = 0, True
    assert not env.plane.healthy()


async def test_unregister_timeout_is_408(tmp_path: Path) -> None:
    environment = Env(tmp_path, unregister_model_timeout=0)
    build_archive(environment.store)
    await environment.plane.register(RegisterRequest("echo.mar", initial_workers=1))
    hang = asyncio.Event()

    async def slow_close() -> None:
        await hang.wait()

    environment.pool().close = slow_close  # type: ignore[method-assign]
    with pytest.raises(RequestTimeout, match="Timed out while cleaning resources: echo"):
        await environment.plane.unregister("echo", None)
    hang.set()
    await environment.plane.close()


async def test_load_startup_models(tmp_path: Path) -> None:
    environment = Env(
        tmp_path,
        load_models=("all",),
        models={"b": {"1.0": {"minWorkers": 1, "batchSize": 4}}},
    )
    build_archive(environment.store, "a")
    build_archive(environment.store, "b", archive_format="tgz")
    (environment.store / "broken.mar").write_bytes(b"junk")
    await environment.plane.load_startup_models()
    a, b = (environment.plane.describe(n, None)[0] for n in ("a", "b"))
    assert (a.min_workers, a.loaded_at_startup) == (2, True)  # one per core (cpu_count=2)
    assert (b.min_workers, b.batch_size) == (1, 4)
    with pytest.raises(ModelNotFound):
        environment.plane.describe("broken", None)
    await environment.plane.close()
    assert environment.workdirs() == []


async def test_synchronous_scale_is_bounded_by_the_startup_timeout(env: Env) -> None:
    # A model that loads and then keeps crashing never becomes ready nor failed: the caller
    # must get 206 after startupTimeout, not wait forever.
    await env.plane.register(RegisterRequest("echo.mar", startup_timeout=1))
    pool = env.pool()

    async def never_ready(target: int, *, wait: bool) -> int:
        await asyncio.Event().wait()
        return 0

    pool.scale = never_ready  # type: ignore[method-assign]
    result = await asyncio.wait_for(env.plane.scale("echo", None, 1, None, True), 10)
    assert result.outcome is Outcome.PARTIAL


async def test_inference_is_accounted_below_the_adapters(env: Env) -> None:
    await env.plane.register(RegisterRequest("echo.mar", initial_workers=1))
    arrived = time.perf_counter()
    await env.plane.infer("echo", None, InferenceRequest("a", received_at=arrived))
    await env.plane.infer("echo", "1.0", InferenceRequest("b"))
    with pytest.raises(ModelNotFound):
        await env.plane.infer("made_up_name", None, InferenceRequest("c"))
    assert [(m, v) for m, v, _ in env.accounted] == [("echo", None), ("echo", "1.0")]
    assert env.accounted[0][2] >= 0


async def test_bodyless_worker_failures_raise_the_tables_error(env: Env) -> None:
    await env.plane.register(RegisterRequest("echo.mar", initial_workers=1))
    env.pool().respond = lambda r: PredictResponse(r.request_id, 507, "System out of memory")
    with pytest.raises(OutOfResources, match="System out of memory"):
        await env.plane.infer("echo", None, InferenceRequest("a"))
    env.pool().respond = lambda r: PredictResponse(r.request_id, 503, "Model is not loaded")
    with pytest.raises(ServiceUnavailable):
        await env.plane.infer("echo", None, InferenceRequest("b"))
    body = b'{"code": 418}'
    env.pool().respond = lambda r: PredictResponse(r.request_id, 418, "teapot", body=body)
    answer = await env.plane.infer("echo", None, InferenceRequest("c"))
    assert (answer.status, answer.body) == (418, body)  # a handler's own error is its answer


async def test_startup_gates_readiness(env: Env) -> None:
    assert not env.plane.ready() and env.plane.healthy()
    await env.plane.load_startup_models()
    assert env.plane.ready()
