"""Connection-level attacks on a real server whose open-file limit is small (256).

Silent sockets and slowloris heads, far more than the file descriptors allow, must not take
``/ping`` or inference down; oversized headers get 431; an overload 503 carries
``Retry-After``; the gRPC servers refuse calls past ``grpc_max_concurrent_rpcs`` and
metadata past ``grpc_max_metadata_size``.
"""

from __future__ import annotations

import resource
import socket
import threading
import time
from collections.abc import Iterator

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.integration.server import model_handlers as handlers
from tests.support.server import ServerOptions, ServerProcess, build_archive, running_server

NOFILE = 256
HEAD_TIMEOUT_S = 2.0
#: Far more connections than the server has file descriptors.
ATTACKERS = 600
DEADLINE_S = 30.0


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("limited")
    build_archive(root / "model_store", "echo", handlers.ECHO)
    build_archive(root / "model_store", "slow", handlers.slow_handler(str(root / "slow.log")))
    config = {
        "request_head_timeout_s": str(HEAD_TIMEOUT_S),
        "max_header_size": "8192",
        "max_header_count": "50",
        "grpc_max_concurrent_rpcs": "2",
        "grpc_max_metadata_size": "4096",
        "max_inflight_requests": "3",
        "retry_after_s": "2",
        "max_response_size": "4096",
    }
    options = ServerOptions(load_models="echo=echo.mar,slow=slow.mar", config=config, nofile=NOFILE)
    with running_server(root, options) as server:
        yield server


@pytest.fixture(scope="module", autouse=True)
def enough_files_here() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = ATTACKERS + 200
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"the test process may open only {hard} files")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _port(server: ServerProcess) -> int:
    return int(server.inference_url.rsplit(":", 1)[1])


def _open(port: int, count: int, first_bytes: bytes = b"") -> list[socket.socket]:
    opened = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S)
        if first_bytes:
            sock.sendall(first_bytes)
        opened.append(sock)
    return opened


def _closed_by_server(sock: socket.socket) -> bool:
    """True once the server closed ``sock`` (EOF or reset), waiting up to the deadline."""
    sock.settimeout(DEADLINE_S)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def _ping_and_infer(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.inference_url, timeout=DEADLINE_S) as client:
        ping = client.get("/ping")
        assert ping.status_code == 200, ping.text
        answer = client.post(
            "/predictions/echo", content=b"still here", headers=server.auth("inference")
        )
        assert answer.status_code == 200, answer.text
        assert answer.content == b"still here"


def test_silent_sockets_and_slowloris_past_the_fd_limit_leave_ping_up(
    limited: ServerProcess,
) -> None:
    port = _port(limited)
    attackers = _open(port, ATTACKERS // 2)
    attackers += _open(port, ATTACKERS // 2, b"GET /ping HTTP/1.1\r\nhost: x\r\nx-slow: ")
    try:
        _ping_and_infer(limited)
        # Every attacker is closed by the server: evicted, or its head deadline passed.
        started = time.monotonic()
        for sock in attackers:
            assert _closed_by_server(sock), "an attacking connection stayed open"
        assert time.monotonic() - started < DEADLINE_S * 2
        _ping_and_infer(limited)
    finally:
        for sock in attackers:
            sock.close()
    assert "Too many open files" not in limited.logs()


def test_oversized_headers_are_431_json(limited: ServerProcess) -> None:
    with httpx.Client(base_url=limited.inference_url, timeout=DEADLINE_S) as client:
        big = client.get("/ping", headers={"x-big": "a" * 10_000})
        assert big.status_code == 431
        assert big.headers["content-type"] == "application/json"
        assert big.json()["code"] == 431
    with httpx.Client(base_url=limited.inference_url, timeout=DEADLINE_S) as client:
        many = client.get("/ping", headers={f"x-h{i}": "v" for i in range(60)})
        assert many.status_code == 431
        assert "max_header_count" in many.json()["message"]
    _ping_and_infer(limited)


def test_an_over_long_url_is_400(limited: ServerProcess) -> None:
    with httpx.Client(base_url=limited.inference_url, timeout=DEADLINE_S) as client:
        answer = client.get("/predictions/" + "a" * 10_000)
        assert answer.status_code == 400
        assert "max_url_length" in answer.json()["message"]


def test_grpc_calls_past_the_cap_are_resource_exhausted(limited: ServerProcess) -> None:
    with grpc.insecure_channel(limited.grpc_target("inference")) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="")
        watches = [health.Watch(request, timeout=DEADLINE_S) for _ in range(2)]
        for watch in watches:
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as raised:
            health.Check(request, timeout=DEADLINE_S)
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        for watch in watches:
            watch.cancel()
        deadline = time.monotonic() + DEADLINE_S
        while True:  # the cancelled streams free their places
            try:
                answer = health.Check(request, timeout=DEADLINE_S)
                break
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_grpc_metadata_past_the_cap_is_refused(limited: ServerProcess) -> None:
    with grpc.insecure_channel(limited.grpc_target("inference")) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="")
        with pytest.raises(grpc.RpcError) as raised:
            health.Check(request, timeout=DEADLINE_S, metadata=[("x-big", "a" * 8192)])
        assert raised.value.code() in (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.StatusCode.INTERNAL,
        )
        assert health.Check(request, timeout=DEADLINE_S).status == (
            health_pb2.HealthCheckResponse.SERVING
        )


def test_past_max_inflight_requests_is_503_with_retry_after_and_ping_is_exempt(
    limited: ServerProcess,
) -> None:
    held: list[int] = []

    def hold() -> None:
        with limited.client(timeout=DEADLINE_S) as client:
            held.append(client.post("/predictions/slow", content=b"3:held").status_code)

    def inflight() -> float:
        text = httpx.get(f"{limited.metrics_url}/metrics", timeout=DEADLINE_S).text
        line = next(x for x in text.splitlines() if x.startswith("torchwick_requests_inflight{"))
        return float(line.split()[-1])

    threads = [threading.Thread(target=hold) for _ in range(3)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + DEADLINE_S
    while inflight() < 3:
        assert time.monotonic() < deadline, "the held requests never arrived"
        time.sleep(0.05)
    refused = limited.client().post("/predictions/echo", content=b"x")
    ping = httpx.get(f"{limited.inference_url}/ping", timeout=DEADLINE_S)
    for thread in threads:
        thread.join()
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "2"
    assert "max_inflight_requests" in refused.json()["message"]
    assert ping.status_code == 200
    assert held == [200, 200, 200]
    _ping_and_infer(limited)


def test_an_oversized_response_is_a_json_error(limited: ServerProcess) -> None:
    answer = limited.client().post("/predictions/echo", content=b"x" * 10_000)
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/json"
    document = answer.json()
    assert set(document) == {"code", "type", "message"}
    assert "max_response_size" in document["message"]
    _ping_and_infer(limited)
