"""A real server's warm spare worker: a register takes it, it is replaced after use and after
being killed, it is not a model worker, and a stop leaves no process behind."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from examples.models import MLP
from tests.integration.server import model_handlers as handlers
from tests.support.models import save_torchscript
from tests.support.processes import descendants, descends_from, gone
from tests.support.server import ServerOptions, ServerProcess, build_archive, running_server

pytestmark = pytest.mark.timeout(240)

_READY = re.compile(r"warm spare worker ready \(pid (\d+), (\d+) threads\)")
_TAKES = re.compile(r"(W-\d+-\S+) takes the warm spare worker \(pid (\d+)\)")


def _wait(condition: Callable[[], bool], what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _console(server: ServerProcess) -> str:
    # The server's own output only (``logs()`` adds the log files, which repeat the lines).
    return server.output.read_text(errors="replace")


def _ready_pids(server: ServerProcess) -> list[int]:
    return [int(pid) for pid, _ in _READY.findall(_console(server))]


def _mlp_store(root: Path) -> tuple[torch.Tensor, list[float]]:
    store = root / "model_store"
    store.mkdir(parents=True)
    torch.manual_seed(0)
    model = MLP().eval()
    source = root / "mlp_src"
    serialized = save_torchscript(model, source, torch.zeros(1, 64))
    build_archive(store, "mlp", handlers.MLP, serialized_file=source / serialized)
    sample = torch.randn(64)
    with torch.inference_mode():
        logits = model(sample.unsqueeze(0))[0]
    return sample, logits.tolist()


def test_register_takes_the_spare_which_is_replaced_then_killed_then_stopped(
    tmp_path: Path,
) -> None:
    sample, logits = _mlp_store(tmp_path)
    options = ServerOptions(enable_model_api=True, disable_token_auth=True)
    server_pid = -1
    with running_server(tmp_path, options) as server:
        server_pid = server.process.pid
        management = server.client("management", timeout=120)
        _wait(lambda: len(_ready_pids(server)) == 1, "the warm spare")
        [spare] = _ready_pids(server)
        assert descends_from(spare, server_pid)
        # Not a model worker: no model, nothing in describe.
        assert management.get("/models").json()["models"] == []

        query = {"url": "mlp.mar", "initial_workers": 1, "synchronous": "true"}
        response = management.post("/models", params=query)
        assert response.status_code == 200, response.text
        [worker] = management.get("/models/mlp").json()[0]["workers"]
        assert worker["pid"] == spare
        assert _TAKES.findall(_console(server)) == [(f"W-{worker['id']}-mlp_1.0", str(spare))]
        answer = server.client().post("/predictions/mlp", json=sample.tolist())
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"argmax": int(torch.tensor(logits).argmax()), "size": 10}

        # Replaced after use, by a new process of this server.
        _wait(lambda: len(_ready_pids(server)) == 2, "the replacement spare")
        replacement = _ready_pids(server)[1]
        assert replacement != spare and descends_from(replacement, server_pid)

        # Replaced after being killed (checked to be ours first).
        assert descends_from(replacement, server_pid)
        os.kill(replacement, signal.SIGKILL)
        _wait(lambda: len(_ready_pids(server)) == 3, "a spare after the kill")
        third = _ready_pids(server)[2]
        assert third not in (spare, replacement) and descends_from(third, server_pid)
        # The model's worker was not touched, and still answers.
        [still] = management.get("/models/mlp").json()[0]["workers"]
        assert still["pid"] == spare
        assert server.client().post("/predictions/mlp", json=sample.tolist()).status_code == 200

        processes = descendants(server_pid)
        assert {spare, third} <= processes
    # running_server stopped it: the frontend and everything it started are gone.
    assert server.process.returncode == 0
    _wait(lambda: all(gone(pid) for pid in processes | {server_pid}), "every process to exit", 30)


def test_without_spares_a_register_spawns_cold(tmp_path: Path) -> None:
    sample, logits = _mlp_store(tmp_path)
    options = ServerOptions(
        enable_model_api=True, disable_token_auth=True, config={"warm_workers": "0"}
    )
    with running_server(tmp_path, options) as server:
        management = server.client("management", timeout=120)
        query = {"url": "mlp.mar", "initial_workers": 1, "synchronous": "true"}
        assert management.post("/models", params=query).status_code == 200
        answer = server.client().post("/predictions/mlp", json=sample.tolist())
        assert answer.json() == {"argmax": int(torch.tensor(logits).argmax()), "size": 10}
        [worker] = management.get("/models/mlp").json()[0]["workers"]
        assert descends_from(worker["pid"], server.process.pid)
        logs = _console(server)
        assert _READY.findall(logs) == [] and _TAKES.findall(logs) == []
