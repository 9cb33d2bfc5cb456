"""The data plane over real worker processes and a real archive built in the test.

One module-scoped server (supervisor + data plane) keeps process start-ups few: register,
infer, batches under concurrency, scale up and down, describe (plain and customized), a
failing handler, unregister.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from torchwick.archiver import archive_model
from torchwick.handlers.messages import InputParameter
from torchwick.server.contracts import InferenceRequest, ModelPage, Outcome
from torchwick.server.dataplane import DataPlane, RegisterRequest
from torchwick.server.errors import ModelLoadFailed, ModelNotFound, ServiceUnavailable
from torchwick.server.settings import Settings
from torchwick.server.workers import WorkerSupervisor

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

HANDLER = '''
"""Answers each request with its body and the size of the batch it ran in."""

import json
import time


def handle(data, context):
    if data is None:
        return None
    if context.get_request_header(0, "describe"):
        return [json.dumps({"handler": "batch_echo"})]
    time.sleep(0.02)  # long enough for concurrent requests to queue up behind a busy worker
    out = []
    for row in data:
        body = row.get("body")
        if isinstance(body, (bytes, bytearray)):
            body = body.decode()
        out.append(json.dumps({"echo": body, "batch": len(data), "pid": __import__("os").getpid()}))
    return out
'''

BROKEN_HANDLER = "raise ImportError('this handler cannot load')\n"


def build(tmp: Path, store: Path, name: str, source: str, *, version: str = "1.0") -> Path:
    work = tmp / f"src-{name}-{version}"
    work.mkdir()
    handler = work / f"{name}_handler.py"
    handler.write_text(source)
    result = archive_model(
        model_name=name, version=version, handler=str(handler), export_path=work, force=True
    )
    return Path(result.path).rename(store / f"{name}-{version}.mar")


def request(i: int | str) -> InferenceRequest:
    return InferenceRequest(str(i), inputs=(InputParameter("body", str(i).encode()),))


def answer(body: bytes) -> dict[str, object]:
    parsed = json.loads(body)
    assert isinstance(parsed, dict)
    return parsed


class Server:
    def __init__(self, tmp: Path) -> None:
        self.store = tmp / "store"
        self.store.mkdir()
        self.settings = Settings(
            model_store=self.store,
            log_location=tmp / "logs",
            default_startup_timeout=60,
            unregister_model_timeout=30,
        )
        self.supervisor = WorkerSupervisor(self.settings, gpu_count=0, cpu_count=2)
        self.plane = DataPlane(self.settings, self.supervisor, cpu_count=2)
        build(tmp, self.store, "echo", HANDLER)
        build(tmp, self.store, "echo", HANDLER, version="2.0")
        build(tmp, self.store, "broken", BROKEN_HANDLER)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    srv = Server(tmp_path_factory.mktemp("dataplane"))
    try:
        yield srv
    finally:
        await srv.plane.close()
        await srv.supervisor.close()


async def test_register_and_infer(server: Server) -> None:
    result = await server.plane.register(
        RegisterRequest("echo-1.0.mar", initial_workers=1, batch_size=8)
    )
    assert (result.outcome, result.message) == (
        Outcome.DONE,
        'Model "echo" Version: 1.0 registered with 1 initial workers',
    )
    response = await server.plane.infer("echo", None, request("hello"))
    assert response.status == 200
    assert answer(response.body)["echo"] == "hello"
    assert server.plane.model_ready("echo") and server.plane.healthy()


async def test_batches_form_under_concurrency(server: Server) -> None:
    sequential = [
        answer((await server.plane.infer("echo", None, request(i))).body) for i in range(3)
    ]
    assert [a["batch"] for a in sequential] == [1, 1, 1]
    responses = await asyncio.gather(
        *(server.plane.infer("echo", None, request(i)) for i in range(24))
    )
    answers = [answer(r.body) for r in responses]
    assert [a["echo"] for a in answers] == [str(i) for i in range(24)]
    assert max(int(str(a["batch"])) for a in answers) > 1
    assert all(int(str(a["batch"])) <= 8 for a in answers)


async def test_scale_describe_and_customized(server: Server) -> None:
    result = await server.plane.scale("echo", None, 2, None, True)
    assert (result.outcome, result.message) == (Outcome.DONE, "Workers scaled to 2 for model: echo")
    described = server.plane.describe("echo", None)[0]
    assert described.min_workers == 2 and described.state == "READY"
    workers = described.workers
    assert [w.status for w in workers] == ["READY", "READY"]
    assert all(isinstance(w.pid, int) and w.pid > 0 for w in workers)
    assert all(w.start_time is not None for w in workers)
    responses = await asyncio.gather(
        *(server.plane.infer("echo", None, request(i)) for i in range(16))
    )
    assert len({answer(r.body)["pid"] for r in responses}) == 2  # both workers served
    customized = await server.plane.describe_customized("echo", None)
    assert customized[0].customized == {"handler": "batch_echo"}
    result = await server.plane.scale("echo", "1.0", 1, None, True)
    assert result.message == "Workers scaled to 1 for model: echo, version: 1.0"
    assert len(server.plane.describe("echo", None)[0].workers) == 1


async def test_versions_and_unregister(server: Server) -> None:
    result = await server.plane.register(
        RegisterRequest("echo-2.0.mar", initial_workers=1, synchronous=False)
    )
    assert result.outcome is Outcome.ACCEPTED
    response = await server.plane.infer("echo", "2.0", request("v2"))  # waits for the worker
    assert answer(response.body)["echo"] == "v2"
    pids = [w.pid for w in server.plane.describe("echo", "2.0")[0].workers]
    result = await server.plane.unregister("echo", "2.0")
    assert (result.outcome, result.message) == (Outcome.DONE, 'Model "echo" unregistered')
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert [d.version for d in server.plane.describe("echo", None, all_versions=True)] == ["1.0"]


async def test_failing_handler_is_500_and_not_registered(server: Server) -> None:
    with pytest.raises(ModelLoadFailed, match="Failed to start workers for model broken"):
        await server.plane.register(RegisterRequest("broken-1.0.mar", initial_workers=1))
    with pytest.raises(ModelNotFound):
        server.plane.describe("broken", None)
    assert server.plane.healthy()


async def test_scale_to_zero_then_unregister(server: Server) -> None:
    await server.plane.scale("echo", None, 0, None, True)
    with pytest.raises(ServiceUnavailable):
        await server.plane.infer("echo", None, request("x"))
    result = await server.plane.unregister("echo", None)
    assert result.outcome is Outcome.DONE
    assert server.plane.list_models(100, 0) == ModelPage((), None)
