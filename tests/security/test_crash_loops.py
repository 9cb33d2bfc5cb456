"""Crash loops recover, queues answer clearly, and kill -9 of workers under load leaves no
request unanswered, on a real server with real workers.

- A startup model whose handler cannot load stays registered: describe shows
  ``CRASH_LOOPING``, ``/ping`` is unhealthy, the metric says 1, and its workers keep being
  retried well past ``max_load_failures``; once the cause is gone it serves by itself.
- A full queue is 503 "queue full" with ``Retry-After``.
- Workers killed with SIGKILL while clients send requests: every request gets an answer (200,
  or a JSON 500/503), and the model serves again afterwards.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.integration.server import model_handlers as handlers
from tests.support.server import ServerOptions, ServerProcess, build_archive, running_server

DEADLINE_S = 90.0

#: Counts its load attempts in ``@DIR@/attempts``; loads only once ``@DIR@/fixed`` exists.
FLAKY = """
from pathlib import Path

_DIR = Path("@DIR@")
with (_DIR / "attempts").open("a") as _log:
    _log.write("attempt\\n")
if not (_DIR / "fixed").exists():
    raise RuntimeError("the model's files are not there yet")


def handle(data, context):
    if data is None:
        return None
    return ["recovered" for _ in data]
"""


@dataclass
class CrashWorld:
    server: ServerProcess
    state: Path


@pytest.fixture(scope="module")
def crash_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CrashWorld]:
    root = tmp_path_factory.mktemp("crash")
    state = root / "state"
    state.mkdir()
    store = root / "model_store"
    build_archive(store, "flaky", FLAKY.replace("@DIR@", str(state)))
    build_archive(store, "pid", handlers.PID)
    build_archive(
        store, "slow", handlers.slow_handler(str(state / "slow.log")), config={"jobQueueSize": 2}
    )
    config = {"worker_backoff_max_s": "1"}
    options = ServerOptions(
        load_models="flaky=flaky.mar,pid=pid.mar,slow=slow.mar",
        config=config,
        expect_healthy=False,
        start_timeout_s=DEADLINE_S,
    )
    with running_server(root, options) as server:
        yield CrashWorld(server, state)


def _state(server: ServerProcess, name: str) -> str:
    described = server.client("management").get(f"/models/{name}")
    assert described.status_code == 200, described.text
    return str(described.json()[0]["state"])


def _wait_for(condition: object, what: str) -> None:
    assert callable(condition)
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_crash_looping_startup_model_is_kept_shown_and_recovers(crash_world: CrashWorld) -> None:
    server, state = crash_world.server, crash_world.state
    attempts = state / "attempts"

    def tries() -> int:
        return len(attempts.read_text().splitlines()) if attempts.exists() else 0

    _wait_for(lambda: _state(server, "flaky") == "CRASH_LOOPING", "CRASH_LOOPING in describe")
    ping = httpx.get(f"{server.inference_url}/ping", timeout=10)
    assert ping.status_code == 500 and ping.json()["status"] == "Unhealthy"
    metrics = httpx.get(f"{server.metrics_url}/metrics", timeout=10).text
    assert 'torchwick_model_crash_looping{model_name="flaky"' in metrics
    line = next(x for x in metrics.splitlines() if x.startswith("torchwick_model_crash_looping{"))
    assert line.endswith(" 1.0"), line
    # The old pool gave up after 5 failed loads; this one keeps trying.
    _wait_for(lambda: tries() >= 8, "more load attempts than max_load_failures")
    answer = server.client().post("/predictions/flaky", content=b"x")
    assert answer.status_code in (500, 503) and answer.json()["code"] in (500, 503)
    (state / "fixed").write_text("yes")
    _wait_for(lambda: _state(server, "flaky") == "READY", "recovery without any API call")
    assert server.client().post("/predictions/flaky", content=b"x").text == "recovered"
    _wait_for(
        lambda: httpx.get(f"{server.inference_url}/ping", timeout=10).status_code == 200,
        "/ping healthy again",
    )


def test_a_full_queue_is_503_queue_full_with_retry_after(crash_world: CrashWorld) -> None:
    server, log = crash_world.server, crash_world.state / "slow.log"
    _wait_for(lambda: _state(server, "slow") == "READY", "slow ready")
    results: list[int] = []

    def send(body: bytes) -> None:
        with server.client(timeout=DEADLINE_S) as client:
            results.append(client.post("/predictions/slow", content=body).status_code)

    def queue_depth() -> float:
        text = httpx.get(f"{server.metrics_url}/metrics", timeout=10).text
        prefix = 'torchwick_queue_depth{model_name="slow"'
        return float(next(x for x in text.splitlines() if x.startswith(prefix)).split()[-1])

    threads = [
        threading.Thread(target=send, args=(f"{s}:{i}".encode(),)) for i, s in enumerate("511")
    ]
    threads[0].start()  # runs for 5 s ...
    _wait_for(lambda: log.exists() and "start 0" in log.read_text(), "the first to run")
    for thread in threads[1:]:  # ... while two more fill the queue of 2
        thread.start()
    _wait_for(lambda: queue_depth() == 2, "a full queue")
    refused = server.client().post("/predictions/slow", content=b"0:over")
    for thread in threads:
        thread.join()
    assert refused.status_code == 503
    assert "queue full" in refused.json()["message"]
    assert refused.headers["retry-after"] == "1"
    assert results == [200, 200, 200]
    assert "start over" not in log.read_text()


def test_kill_9_of_workers_under_load_answers_every_request(crash_world: CrashWorld) -> None:
    server = crash_world.server
    _wait_for(lambda: _state(server, "pid") == "READY", "pid ready")
    statuses: list[int] = []
    bodies: list[bytes] = []
    errors: list[tuple[str | None, dict[str, object]]] = []
    stop = threading.Event()
    lock = threading.Lock()

    def load() -> None:
        with server.client(timeout=DEADLINE_S) as client:
            while not stop.is_set():
                answer = client.post("/predictions/pid", content=b"x")
                with lock:
                    statuses.append(answer.status_code)
                    bodies.append(answer.content)
                    if answer.status_code != 200:
                        errors.append((answer.headers.get("content-type"), answer.json()))

    clients = [threading.Thread(target=load) for _ in range(4)]
    for thread in clients:
        thread.start()
    killed = 0
    deadline = time.monotonic() + DEADLINE_S
    while killed < 3 and time.monotonic() < deadline:
        with lock:
            pids = {b.decode() for b, s in zip(bodies, statuses, strict=True) if s == 200}
            sent = len(statuses)
        live = [int(p) for p in pids if _alive(int(p))]
        if live and sent > 20 * (killed + 1):
            os.kill(live[0], signal.SIGKILL)
            killed += 1
        time.sleep(0.05)
    _wait_for(lambda: _state(server, "pid") == "READY", "the pid model back to READY")
    stop.set()
    for thread in clients:
        thread.join(DEADLINE_S)
        assert not thread.is_alive(), "a client never got an answer"
    assert killed == 3
    assert set(statuses) <= {200, 500, 503}, statuses
    for content_type, document in errors:  # worker death answered in JSON
        assert content_type == "application/json"
        assert set(document) == {"code", "type", "message"}
    assert statuses.count(200) > 60
    assert server.client().post("/predictions/pid", content=b"x").status_code == 200


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
