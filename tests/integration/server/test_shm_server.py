"""Shared-memory IPC through a real server: equal answers with it on and off (raw bodies and
OIP binary tensors), the path really taken, and nothing left behind by a killed worker or a
killed frontend (``/dev/shm`` and the processes' mappings checked before and after)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http

from tests.support.processes import gone, parent_of
from tests.support.server import (
    ServerOptions,
    ServerProcess,
    build_archive,
    running_server,
    start_server,
)

pytestmark = pytest.mark.timeout(180)

MEMFD = "memfd:torchwick-ipc"

#: Echoes a raw body reversed (header ``x-origin``: ``shm`` when the handler's buffer is the
#: worker's mapping of the arena) and doubles an OIP tensor (output ``origin``: 1 when shared).
HANDLER = """
import ctypes
import os
import time

import numpy as np


def _arena_starts():
    with open("/proc/self/maps") as maps:
        return {int(line.split("-", 1)[0], 16) for line in maps if "memfd:torchwick-ipc" in line}


def _shared(buffer):
    return (
        isinstance(buffer, memoryview)
        and buffer.readonly
        and ctypes.addressof(buffer.obj) in _arena_starts()
    )


def handle(data, context):
    if data is None:
        if os.path.exists("slow_load"):
            print("loading slowly", flush=True)
            time.sleep(60)
        return None
    out = []
    for idx, row in enumerate(data):
        if "body" in row:
            body = row["body"]
            if bytes(body[:5]) == b"sleep":
                print("sleeping on it", flush=True)
                time.sleep(60)
            context.set_response_header(idx, "x-origin", "shm" if _shared(body) else "socket")
            out.append(bytes(body)[::-1])
        else:
            array = base = row["input__0"]
            while isinstance(base, np.ndarray):  # reshape views -> frombuffer array -> buffer
                base = base.base
            origin = np.array([1 if _shared(base) else 0], dtype=np.int32)
            out.append({"out": array * 2, "origin": origin})
    return out


handle.zero_copy_inputs = True
"""

#: The raw-bytes ResNet input: 3 x 224 x 224 float32.
RESNET_INPUT = np.linspace(-2, 2, 3 * 224 * 224, dtype=np.float32).tobytes()
THRESHOLD = 64 * 1024


def _options(threshold: int, **extra: Any) -> ServerOptions:
    config = {"ipc_shm_threshold": str(threshold), "ipc_shm_size": str(16 * 1024 * 1024)}
    return ServerOptions(disable_token_auth=True, load_models="echo.mar", config=config, **extra)


def _archive(root: Path, *, slow_load: bool = False) -> None:
    extra = {"slow_load": ""} if slow_load else None
    build_archive(root / "model_store", "echo", HANDLER, extra_files=extra)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerProcess]]:
    roots = {name: tmp_path_factory.mktemp(f"shm-{name}") for name in ("on", "off")}
    for root in roots.values():
        _archive(root)
    with (
        running_server(roots["on"], _options(THRESHOLD)) as on,
        running_server(roots["off"], _options(0)) as off,
    ):
        yield {"on": on, "off": off}


def _raw(server: ServerProcess, body: bytes) -> tuple[int, bytes, str | None]:
    with server.client() as client:
        response = client.post(
            "/predictions/echo", content=body, headers={"content-type": "application/octet-stream"}
        )
    return response.status_code, response.content, response.headers.get("x-origin")


def _oip(server: ServerProcess, sample: np.ndarray) -> tuple[np.ndarray, int]:
    client = triton_http.InferenceServerClient(server.inference_url.removeprefix("http://"))
    try:
        tensor = triton_http.InferInput("input__0", list(sample.shape), "FP32")
        tensor.set_data_from_numpy(sample, binary_data=True)
        outputs = [
            triton_http.InferRequestedOutput("out", binary_data=True),
            triton_http.InferRequestedOutput("origin", binary_data=True),
        ]
        result = client.infer("echo", [tensor], outputs=outputs)
        out, origin = result.as_numpy("out"), result.as_numpy("origin")
        assert out is not None and origin is not None
        return out, int(origin[0])
    finally:
        client.close()


def test_raw_bodies_answer_the_same_with_and_without_shared_memory(
    servers: dict[str, ServerProcess],
) -> None:
    on = _raw(servers["on"], RESNET_INPUT)
    off = _raw(servers["off"], RESNET_INPUT)
    assert on[:2] == off[:2] == (200, RESNET_INPUT[::-1])  # a 602 KB answer both ways
    assert (on[2], off[2]) == ("shm", "socket")  # the handler viewed the arena only when on
    small = _raw(servers["on"], b"below the threshold")
    assert small == (200, b"dlohserht eht woleb", "socket")


def test_oip_binary_tensors_answer_the_same_with_and_without_shared_memory(
    servers: dict[str, ServerProcess],
) -> None:
    sample = np.linspace(-1, 1, 3 * 224 * 224, dtype=np.float32).reshape(1, 3, 224, 224)
    on, on_origin = _oip(servers["on"], sample)
    off, off_origin = _oip(servers["off"], sample)
    np.testing.assert_array_equal(on, off)
    np.testing.assert_array_equal(on, sample * 2)
    assert (on_origin, off_origin) == (1, 0)  # np.frombuffer over the mapped memory when on


# ---- cleanup ------------------------------------------------------------------------------------


def _dev_shm() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


def _maps(pid: int) -> int:
    try:
        return Path(f"/proc/{pid}/maps").read_text().count(MEMFD)
    except OSError:
        return 0


def _worker_pids(server: ServerProcess) -> list[int]:
    with server.client("management") as client:
        described = client.get("/models/echo").json()
    return [w["pid"] for w in described[0]["workers"] if w["pid"] > 0]


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _in_flight(server: ServerProcess, body: bytes) -> threading.Thread:
    """Send ``body`` from a thread; its answer (the worker dies first) is not awaited."""

    def send() -> None:
        with contextlib.suppress(httpx.HTTPError), server.client(timeout=60) as client:
            client.post("/predictions/echo", content=body)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def test_a_worker_killed_mid_batch_leaves_nothing(tmp_path: Path) -> None:
    before = _dev_shm()
    _archive(tmp_path)
    with running_server(tmp_path, _options(THRESHOLD)) as server:
        frontend = server.process.pid
        [pid] = _worker_pids(server)
        assert _raw(server, RESNET_INPUT)[2] == "shm"
        assert (_maps(frontend), _maps(pid)) == (1, 1)
        # The worker holds the request's extent (and views of it) when it dies.
        sender = _in_flight(server, b"sleep" + RESNET_INPUT)
        _wait_for(lambda: "sleeping on it" in server.logs(), "the batch to reach the handler")
        os.kill(pid, signal.SIGKILL)
        sender.join(60)
        _wait_for(lambda: gone(pid), "the killed worker to be reaped")
        _wait_for(lambda: _worker_pids(server) not in ([], [pid]), "the replacement worker")
        [replacement] = _worker_pids(server)
        _wait_for(lambda: _raw(server, RESNET_INPUT)[2] == "shm", "the replacement's arena")
        # One arena mapped in the frontend again: the dead worker's was unmapped.
        assert (_maps(frontend), _maps(replacement)) == (1, 1)
        assert _dev_shm() == before
    assert _dev_shm() == before


def test_a_worker_killed_mid_load_leaves_nothing(tmp_path: Path) -> None:
    before = _dev_shm()
    _archive(tmp_path, slow_load=True)
    options = _options(THRESHOLD, expect_healthy=False)
    with running_server(tmp_path, options) as server:
        _wait_for(lambda: "loading slowly" in server.logs(), "the worker to be loading")
        [pid] = _worker_pids(server)
        os.kill(pid, signal.SIGKILL)
        _wait_for(lambda: gone(pid), "the killed worker to be reaped")
        assert _maps(server.process.pid) == 0  # an arena exists only after a good load
        assert _dev_shm() == before
    assert _dev_shm() == before


def test_a_killed_frontend_leaves_nothing(tmp_path: Path) -> None:
    before = _dev_shm()
    _archive(tmp_path)
    server = start_server(tmp_path, _options(THRESHOLD))
    try:
        frontend = server.process.pid
        assert parent_of(frontend) == os.getpid()  # our own child: safe to signal
        [pid] = _worker_pids(server)
        assert _raw(server, RESNET_INPUT)[2] == "shm"
        assert (_maps(frontend), _maps(pid)) == (1, 1)
        sender = _in_flight(server, b"sleep" + RESNET_INPUT)
        _wait_for(lambda: "sleeping on it" in server.logs(), "the batch to reach the handler")
        os.kill(frontend, signal.SIGKILL)
        server.process.wait(30)
        # The worker follows its frontend (PR_SET_PDEATHSIG), and with it the last mapping.
        _wait_for(lambda: gone(pid), "the worker to die with its frontend")
        sender.join(60)
        assert _dev_shm() == before
    finally:
        server.stop()
    assert _dev_shm() == before


def test_a_worker_made_from_a_warm_spare_uses_shared_memory_and_the_spin_count(
    tmp_path: Path,
) -> None:
    # The spare is spawned before any model exists: it must take its model's shared-memory
    # settings at adoption, and it imports torch before any LOAD, so OpenMP's spin count must
    # already be in its environment.
    _archive(tmp_path)
    options = _options(THRESHOLD, enable_model_api=True)
    options = ServerOptions(
        disable_token_auth=True,
        enable_model_api=True,
        config={**options.config, "worker_omp_spin_count": "777"},
    )
    ready = re.compile(r"warm spare worker ready \(pid (\d+)")
    with running_server(tmp_path, options) as server:
        _wait_for(lambda: bool(ready.search(server.output.read_text())), "the warm spare")
        spare = int(ready.findall(server.output.read_text())[0])
        with server.client("management", timeout=120) as management:
            query = {"url": "echo.mar", "initial_workers": "1", "synchronous": "true"}
            assert management.post("/models", params=query).status_code == 200
        assert _worker_pids(server) == [spare]  # the spare was adopted
        environ = Path(f"/proc/{spare}/environ").read_bytes().split(b"\0")
        assert b"GOMP_SPINCOUNT=777" in environ
        status, body, origin = _raw(server, RESNET_INPUT)
        assert (status, body, origin) == (200, RESNET_INPUT[::-1], "shm")
