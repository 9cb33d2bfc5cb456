"""The worker's frame loop with ``handler.pipeline_depth: 2``, over a socketpair.

The in-test service has the two stages a pipelined worker drives (``prepare_batch`` on the
preprocessing thread, ``complete_batch`` on the inference thread); the frontend side sends
batches back to back, as the pool does for a pipelined worker, without waiting for answers.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pytest

from torchwick.handlers.messages import InputParameter, LoadSpec, PredictRequest, PredictResponse
from torchwick.server.workers import ipc
from torchwick.server.workers.ipc import Kind
from torchwick.server.workers.stream import BlockingFrameSocket
from torchwick.server.workers.worker_main import EmitIntermediate, EmitMetric, WorkerLoop

#: Every wait in this module is bounded by this (seconds).
WAIT_S = 10.0
PIPELINED = LoadSpec(
    "m", "1", "/nowhere", "h.py", model_yaml_config={"handler": {"pipeline_depth": 2}}
)


@dataclass
class StagedService:
    """Upper-cases bodies in ``prepare_batch``; answers them in ``complete_batch``.

    A body ``hold`` keeps its batch's second stage waiting until the next batch's first stage
    has started (so the test fails if the stages do not overlap); ``boom`` fails the first
    stage of its batch outside any handler error handling.
    """

    prepared: list[str] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)
    next_prepare_started: threading.Event = field(default_factory=threading.Event)
    overlapped: list[bool] = field(default_factory=list)

    def prepare_batch(self, batch: Sequence[PredictRequest]) -> list[tuple[str, bytes]]:
        if self.prepared:
            self.next_prepare_started.set()
        self.prepared.append(batch[0].request_id)
        bodies = [(r.request_id, r.parameters[0].value) for r in batch]
        if any(body == b"boom" for _, body in bodies):
            raise RuntimeError("preprocessing bug")
        return [(rid, bytes(body).upper()) for rid, body in bodies]

    def complete_batch(self, prepared: list[tuple[str, bytes]]) -> list[PredictResponse]:
        if any(body == b"HOLD" for _, body in prepared):
            self.overlapped.append(self.next_prepare_started.wait(WAIT_S))
        self.completed.append(prepared[0][0])
        return [PredictResponse(rid, body=body) for rid, body in prepared]

    def predict(self, batch: Sequence[PredictRequest]) -> list[PredictResponse]:
        return self.complete_batch(self.prepare_batch(batch))

    def describe(self, request: PredictRequest) -> PredictResponse:
        return PredictResponse(request.request_id, body=b"described")


class Frontend:
    def __init__(self, sock: socket.socket) -> None:
        self.conn = BlockingFrameSocket(sock)

    def answers(self, count: int) -> list[tuple[int, int, list[PredictResponse]]]:
        """The next ``count`` result frames as ``(kind, batch_id, responses)``."""
        found = []
        while len(found) < count:
            frame = self.conn.recv()
            assert frame is not None
            kind, header, payload = frame
            if kind in (Kind.PREDICT_RESULT, Kind.DESCRIBE_RESULT):
                batch_id, responses = ipc.decode_responses(header, payload)
                found.append((kind, batch_id, responses))
            elif kind == Kind.PONG:
                found.append((kind, ipc.decode_seq(header), []))
        return found


@pytest.fixture
def worker() -> Iterator[tuple[Frontend, list[int], StagedService]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.settimeout(WAIT_S)
    service = StagedService()

    def load(spec: LoadSpec, _i: EmitIntermediate, _m: EmitMetric) -> StagedService:
        return service

    conn = BlockingFrameSocket(theirs)
    loop = WorkerLoop(conn, load, apply_threads=lambda _n: None, set_intra_op=lambda _n: None)
    exit_code: list[int] = []

    def run() -> None:
        try:
            exit_code.append(loop.run())
        finally:
            conn.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    frontend = Frontend(ours)
    frontend.conn.send(ipc.encode_load(PIPELINED))
    while True:
        frame = frontend.conn.recv()
        assert frame is not None
        if frame[0] == Kind.LOAD_RESULT:
            assert ipc.decode_load_result(frame[1])[0] == 200
            break
    yield frontend, exit_code, service
    frontend.conn.close()
    thread.join(WAIT_S)
    assert not thread.is_alive()


def _batch(*bodies: bytes, prefix: str) -> list[PredictRequest]:
    return [
        PredictRequest(f"{prefix}{i}", (), (InputParameter("body", body),))
        for i, body in enumerate(bodies)
    ]


def test_the_next_batch_is_preprocessed_while_the_current_one_runs(
    worker: tuple[Frontend, list[int], StagedService],
) -> None:
    frontend, _, service = worker
    frontend.conn.send(ipc.encode_requests(Kind.PREDICT, 1, _batch(b"hold", prefix="a")))
    frontend.conn.send(ipc.encode_requests(Kind.PREDICT, 2, _batch(b"next", prefix="b")))
    answers = frontend.answers(2)
    assert service.overlapped == [True]
    assert [(bid, [r.body for r in rs]) for _, bid, rs in answers] == [
        (1, [b"HOLD"]),
        (2, [b"NEXT"]),
    ]


def test_answers_leave_in_arrival_order_and_pings_are_answered_meanwhile(
    worker: tuple[Frontend, list[int], StagedService],
) -> None:
    frontend, _, service = worker
    frontend.conn.send(ipc.encode_requests(Kind.PREDICT, 1, _batch(b"hold", prefix="a")))
    frontend.conn.send(ipc.encode_ping(7))
    for batch_id in (2, 3, 4):
        frontend.conn.send(
            ipc.encode_requests(Kind.PREDICT, batch_id, _batch(b"x", b"y", prefix=f"r{batch_id}"))
        )
    frontend.conn.send(ipc.encode_requests(Kind.DESCRIBE, 5, _batch(b"", prefix="d")))
    answers = frontend.answers(6)
    # The PING overtakes the held batch: the main thread reads on while it runs.
    assert answers[0] == (Kind.PONG, 7, [])
    assert [bid for _, bid, _ in answers[1:]] == [1, 2, 3, 4, 5]
    for kind, batch_id, responses in answers[2:5]:
        assert kind == Kind.PREDICT_RESULT
        assert [(r.request_id, r.body) for r in responses] == [
            (f"r{batch_id}0", b"X"),
            (f"r{batch_id}1", b"Y"),
        ]
    assert answers[5][0] == Kind.DESCRIBE_RESULT and answers[5][2][0].body == b"described"
    assert service.completed == ["a0", "r20", "r30", "r40"]


def test_a_failing_stage_fails_its_own_batch_only(
    worker: tuple[Frontend, list[int], StagedService],
) -> None:
    frontend, _, _ = worker
    frontend.conn.send(ipc.encode_requests(Kind.PREDICT, 1, _batch(b"ok", prefix="a")))
    frontend.conn.send(ipc.encode_requests(Kind.PREDICT, 2, _batch(b"fine", b"boom", prefix="b")))
    frontend.conn.send(ipc.encode_requests(Kind.PREDICT, 3, _batch(b"ok", prefix="c")))
    answers = frontend.answers(3)
    statuses = [(bid, [r.status for r in rs]) for _, bid, rs in answers]
    assert statuses == [(1, [200]), (2, [500, 500]), (3, [200])]
    assert answers[1][2][0].reason == "RuntimeError: preprocessing bug"


def test_shutdown_answers_every_batch_received_first(
    worker: tuple[Frontend, list[int], StagedService],
) -> None:
    frontend, exit_code, _ = worker
    frontend.conn.send(ipc.encode_requests(Kind.PREDICT, 1, _batch(b"hold", prefix="a")))
    frontend.conn.send(ipc.encode_requests(Kind.PREDICT, 2, _batch(b"last", prefix="b")))
    frontend.conn.send(ipc.encode_shutdown())
    answers = frontend.answers(2)
    assert [(bid, rs[0].body) for _, bid, rs in answers] == [(1, b"HOLD"), (2, b"LAST")]
    assert frontend.conn.recv() is None
    assert exit_code == [0]


def test_an_invalid_pipeline_depth_fails_the_load_naming_it() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.settimeout(WAIT_S)
    loaded: list[LoadSpec] = []

    def load(spec: LoadSpec, _i: EmitIntermediate, _m: EmitMetric) -> StagedService:
        loaded.append(spec)
        return StagedService()

    conn = BlockingFrameSocket(theirs)
    loop = WorkerLoop(conn, load, apply_threads=lambda _n: None, set_intra_op=lambda _n: None)
    frontend = BlockingFrameSocket(ours)
    bad = LoadSpec(
        "m", "1", "/nowhere", "h.py", model_yaml_config={"handler": {"pipeline_depth": 9}}
    )
    frontend.send(ipc.encode_load(bad))
    try:
        assert loop.run() == 1
    finally:
        conn.close()
    frame = frontend.recv()
    assert frame is not None and frame[0] == Kind.LOAD_RESULT
    status, message = ipc.decode_load_result(frame[1])
    assert status == 500 and "handler.pipeline_depth" in message
    assert loaded == []  # refused before any model was loaded
    frontend.close()
