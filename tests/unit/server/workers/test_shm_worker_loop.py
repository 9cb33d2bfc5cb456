"""The worker's frame loop with a real memfd passed over a real socketpair (SCM_RIGHTS)."""

from __future__ import annotations

import os
import socket
from array import array
from dataclasses import replace

from torchwick.handlers.messages import PredictResponse
from torchwick.server.workers import ipc
from torchwick.server.workers.ipc import Kind
from torchwick.server.workers.shm_frames import decode_answer, encode_requests
from torchwick.server.workers.shm_lane import ShmLane, ShmSettings

from .test_worker_loop import (  # the worker fixture: a WorkerLoop thread on a socketpair
    SPEC,
    EchoService,
    Frontend,
    _request,
    worker,  # noqa: F401
)

MiB = 1024 * 1024


def _answer(frontend: Frontend, lane: ShmLane) -> list[PredictResponse]:
    kind, header, payload = frontend.recv()
    while kind == Kind.METRICS:
        kind, header, payload = frontend.recv()
    assert kind == Kind.PREDICT_RESULT
    batch_id, responses, _ = decode_answer(header, payload, lane)
    lane.settle(batch_id)
    return responses


def _attached(frontend: Frontend) -> ShmLane:
    frontend.send(ipc.encode_load(replace(SPEC, shm_threshold=1000, max_response_size=10**6)))
    while frontend.recv()[0] != Kind.LOAD_RESULT:
        pass
    lane = ShmLane(ShmSettings(threshold=1000, size=1 * MiB, max_response_size=10**6))
    lane.open()
    frame, fd = lane.attach_frame()
    data = b"".join(bytes(b) for b in frame)
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array("i", [fd]).tobytes())]
    frontend.conn._sock.sendmsg([data], ancillary)
    assert lane.arena is not None
    lane.arena.close_fd()
    kind, header, _ = frontend.recv()
    assert (kind, ipc.decode_load_result(header)) == (
        Kind.SHM_ATTACH_RESULT,
        (200, "mapped 1048576 bytes"),
    )
    lane.attached(200, "")
    return lane


def test_values_and_answers_cross_through_the_passed_memfd(
    worker: tuple[Frontend, list[int], list[EchoService]],  # noqa: F811
) -> None:
    frontend, exit_code, services = worker
    lane = _attached(frontend)
    big = bytes(range(256)) * 20
    frontend.send(
        encode_requests(Kind.PREDICT, 1, [_request("a", big), _request("b", b"small")], lane)
    )
    responses = _answer(frontend, lane)
    assert [(r.request_id, r.status, r.body) for r in responses] == [
        ("a", 200, big),
        ("b", 200, b"small"),
    ]
    # Proof of the path: one value went out and one answer came back through the arena.
    counters = lane.counters
    assert (counters.values_sent, counters.bodies_received) == (1, 1)
    assert services[0].seen == [["a", "b"]]
    assert lane.arena is not None and lane.arena.live == ()  # settled: nothing held
    lane.close()
    assert exit_code == []


def test_a_stale_descriptor_fails_its_request_and_the_worker_serves_on(
    worker: tuple[Frontend, list[int], list[EchoService]],  # noqa: F811
) -> None:
    frontend, exit_code, services = worker
    lane = _attached(frontend)
    frame = encode_requests(
        Kind.PREDICT, 2, [_request("a", b"x" * 5000), _request("b", b"mate")], lane
    )
    lane.settle(2)  # freed before the worker reads it: the worker must notice, not misread
    frontend.send(frame)
    a, b = _answer(frontend, lane)
    assert (a.status, b.status, b.body) == (500, 200, b"mate")
    assert "freed or reused" in a.reason and a.body == b""  # the frontend renders the JSON
    assert services[0].seen == [["b"]]  # the refused request never reached the service

    frontend.send(ipc.encode_ping(5))
    kind, header, _ = frontend.recv()
    assert (kind, ipc.decode_seq(header)) == (Kind.PONG, 5)
    frontend.send(encode_requests(Kind.PREDICT, 3, [_request("c", b"y" * 5000)], lane))
    [c] = _answer(frontend, lane)
    assert (c.status, c.body) == (200, b"y" * 5000)
    lane.close()
    assert exit_code == []


def test_attach_without_a_descriptor_is_refused_and_nothing_leaks(
    worker: tuple[Frontend, list[int], list[EchoService]],  # noqa: F811
) -> None:
    frontend, _, _ = worker
    frontend.send(ipc.encode_load(SPEC))
    while frontend.recv()[0] != Kind.LOAD_RESULT:
        pass
    before = set(os.listdir("/proc/self/fd"))
    frontend.send(ipc._frame(Kind.SHM_ATTACH, (1, 4096)))
    kind, header, _ = frontend.recv()
    assert kind == Kind.SHM_ATTACH_RESULT
    assert ipc.decode_load_result(header) == (500, "SHM_ATTACH arrived without a descriptor")
    # Large values sent anyway (a frontend that ignored the refusal) fail alone, by request.
    lane = ShmLane(ShmSettings(threshold=10, size=1 * MiB, max_response_size=10**6))
    lane.open()
    lane.attached(200, "")
    frontend.send(encode_requests(Kind.PREDICT, 4, [_request("a", b"z" * 100)], lane))
    [a] = _answer(frontend, lane)
    assert a.status == 500 and "not attached" in a.reason
    lane.close()
    assert set(os.listdir("/proc/self/fd")) <= before
