"""The worker's frame loop, driven over a socketpair with an in-test model service."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

import pytest

from torchwick.handlers.messages import (
    InputParameter,
    LoadSpec,
    MetricRecord,
    PredictRequest,
    PredictResponse,
)
from torchwick.server.workers import ipc
from torchwick.server.workers.ipc import Kind
from torchwick.server.workers.stream import BlockingFrameSocket
from torchwick.server.workers.worker_main import (
    EmitIntermediate,
    EmitMetric,
    WorkerLoop,
    load_error_status,
)

#: Worker settings arrive in the LOAD frame only: threads, the adaptive flag, the size limit.
SPEC = LoadSpec(
    "m", "1", "/nowhere", "h.py", threads=2, adaptive_threads=True, max_response_size=1000
)


class LoadError(Exception):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass
class EchoService:
    """Echoes each body; ``stream`` sends two chunks first; ``big`` answers past the limit."""

    emit_intermediate: EmitIntermediate
    emit_metric: EmitMetric
    seen: list[list[str]] = field(default_factory=list)

    def predict(self, batch: Sequence[PredictRequest]) -> list[PredictResponse]:
        self.seen.append([r.request_id for r in batch])
        out = []
        for r in batch:
            body = r.parameters[0].value if r.parameters else b""
            if body == b"boom":
                raise RuntimeError("service bug")
            if body == b"stream":
                self.emit_intermediate([PredictResponse(r.request_id, body=b"1", final=False)])
                self.emit_intermediate([PredictResponse(r.request_id, body=b"2")])
            if body == b"big":
                body = b"x" * 2000
            self.emit_metric(MetricRecord("Echoed", 1.0, "count", request_id=r.request_id))
            out.append(PredictResponse(r.request_id, body=body))
        return out

    def describe(self, request: PredictRequest) -> PredictResponse:
        return PredictResponse(request.request_id, body=b'{"v": 1}')


class Frontend:
    """The test's side of the socket: sends frames, collects answers."""

    def __init__(self, sock: socket.socket) -> None:
        self.conn = BlockingFrameSocket(sock)
        #: ``("budget", n)`` / ``("intra", n)`` calls the worker made to set its threads.
        self.thread_calls: list[tuple[str, int]] = []

    def send(self, buffers: ipc.Buffers) -> None:
        self.conn.send(buffers)

    def recv(self) -> tuple[int, bytes, bytes]:
        frame = self.conn.recv()
        assert frame is not None
        return frame


@pytest.fixture
def worker() -> Iterator[tuple[Frontend, list[int], list[EchoService]]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.settimeout(10)
    services: list[EchoService] = []

    def load(spec: LoadSpec, emit_i: EmitIntermediate, emit_m: EmitMetric) -> EchoService:
        if spec.handler == "fail.py":
            raise LoadError("no such handler", 404)
        if spec.handler == "oom.py":
            raise MemoryError
        emit_m(MetricRecord("LoadTime", 3.0, "ms"))
        services.append(EchoService(emit_i, emit_m))
        return services[-1]

    frontend = Frontend(ours)

    def apply_threads(threads: int) -> None:
        if threads == 99:
            raise RuntimeError("torch cannot start 99 threads")
        frontend.thread_calls.append(("budget", threads))

    exit_code: list[int] = []
    conn = BlockingFrameSocket(theirs)
    loop = WorkerLoop(
        conn,
        load,
        apply_threads=apply_threads,
        set_intra_op=lambda n: frontend.thread_calls.append(("intra", n)),
    )

    def run() -> None:  # as worker_main.main does: close the connection on the way out
        try:
            exit_code.append(loop.run())
        finally:
            conn.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield frontend, exit_code, services
    frontend.conn.close()
    thread.join(5)
    assert not thread.is_alive()


def _request(rid: str, body: bytes) -> PredictRequest:
    return PredictRequest(rid, (("a", "b"),), (InputParameter("body", body),))


def test_load_predict_describe_ping_shutdown(
    worker: tuple[Frontend, list[int], list[EchoService]],
) -> None:
    frontend, exit_code, services = worker
    frontend.send(ipc.encode_load(SPEC))
    kind, header, _ = frontend.recv()
    assert kind == Kind.METRICS  # metrics emitted during load arrive before the answer
    assert [m.name for m in ipc.decode_metrics(header)] == ["LoadTime"]
    kind, header, _ = frontend.recv()
    assert (kind, ipc.decode_load_result(header)[0]) == (Kind.LOAD_RESULT, 200)

    frontend.send(ipc.encode_requests(Kind.PREDICT, 5, [_request("a", b"1"), _request("b", b"2")]))
    kind, header, _ = frontend.recv()
    assert kind == Kind.METRICS
    kind, header, payload = frontend.recv()
    assert kind == Kind.PREDICT_RESULT
    batch_id, responses = ipc.decode_responses(header, payload)
    assert batch_id == 5
    assert [(r.request_id, r.body) for r in responses] == [("a", b"1"), ("b", b"2")]
    assert services[0].seen == [["a", "b"]]

    frontend.send(ipc.encode_ping(77))
    kind, header, _ = frontend.recv()
    assert (kind, ipc.decode_seq(header)) == (Kind.PONG, 77)

    frontend.send(ipc.encode_requests(Kind.DESCRIBE, 6, [_request("d", b"")]))
    kind, header, payload = frontend.recv()
    assert kind == Kind.DESCRIBE_RESULT
    assert ipc.decode_responses(header, payload)[1][0].body == b'{"v": 1}'

    frontend.send(ipc.encode_shutdown())
    assert frontend.conn.recv() is None
    assert exit_code == [0]


def test_streaming_chunks_are_tagged_and_never_final(
    worker: tuple[Frontend, list[int], list[EchoService]],
) -> None:
    frontend, _, _ = worker
    frontend.send(ipc.encode_load(SPEC))
    while frontend.recv()[0] != Kind.LOAD_RESULT:
        pass
    frontend.send(ipc.encode_requests(Kind.PREDICT, 9, [_request("s", b"stream")]))
    chunks = []
    for _ in range(2):
        kind, header, payload = frontend.recv()
        assert kind == Kind.INTERMEDIATE
        chunks.append(ipc.decode_responses(header, payload))
    assert [(bid, r[0].body, r[0].final) for bid, r in chunks] == [
        (9, b"1", False),
        (9, b"2", False),
    ]
    kind, header, payload = frontend.recv()
    while kind == Kind.METRICS:
        kind, header, payload = frontend.recv()
    assert kind == Kind.PREDICT_RESULT
    assert ipc.decode_responses(header, payload)[1][0].final is True


def test_errors_inside_a_batch_fail_only_what_they_must(
    worker: tuple[Frontend, list[int], list[EchoService]],
) -> None:
    frontend, exit_code, _ = worker
    frontend.send(ipc.encode_load(SPEC))
    while frontend.recv()[0] != Kind.LOAD_RESULT:
        pass
    frontend.send(
        ipc.encode_requests(Kind.PREDICT, 1, [_request("a", b"big"), _request("b", b"ok")])
    )
    kind, header, payload = frontend.recv()
    while kind == Kind.METRICS:
        kind, header, payload = frontend.recv()
    big, ok = ipc.decode_responses(header, payload)[1]
    assert (big.status, ok.status, ok.body) == (500, 200, b"ok")
    assert "exceeds max_response_size (1000 bytes)" in big.reason

    frontend.send(
        ipc.encode_requests(Kind.PREDICT, 2, [_request("a", b"boom"), _request("b", b"x")])
    )
    kind, header, payload = frontend.recv()
    statuses = [(r.status, r.reason) for r in ipc.decode_responses(header, payload)[1]]
    assert statuses == [(500, "RuntimeError: service bug")] * 2
    assert exit_code == []  # the worker lives on


@pytest.mark.parametrize(
    ("handler", "expected"),
    [("fail.py", (404, "no such handler")), ("oom.py", (507, "System out of memory"))],
)
def test_failed_load_answers_then_exits(
    worker: tuple[Frontend, list[int], list[EchoService]], handler: str, expected: tuple[int, str]
) -> None:
    frontend, exit_code, _ = worker
    frontend.send(ipc.encode_load(LoadSpec("m", "1", "/nowhere", handler)))
    kind, header, _ = frontend.recv()
    assert (kind, ipc.decode_load_result(header)) == (Kind.LOAD_RESULT, expected)
    assert frontend.conn.recv() is None
    assert exit_code == [1]


def test_predict_before_load_is_refused(
    worker: tuple[Frontend, list[int], list[EchoService]],
) -> None:
    frontend, _, _ = worker
    frontend.send(ipc.encode_requests(Kind.PREDICT, 1, [_request("a", b"x")]))
    _, header, payload = frontend.recv()
    assert ipc.decode_responses(header, payload)[1][0].status == 503


def test_load_error_status() -> None:
    assert load_error_status(LoadError("bad", 500)) == (500, "bad")
    assert load_error_status(ValueError("nope")) == (500, "ValueError: nope")
    assert load_error_status(MemoryError()) == (507, "System out of memory")


def _served(frontend: Frontend, batch_id: int) -> None:
    frontend.send(ipc.encode_requests(Kind.PREDICT, batch_id, [_request("a", b"x")]))
    kind = frontend.recv()[0]
    while kind == Kind.METRICS:
        kind = frontend.recv()[0]
    assert kind == Kind.PREDICT_RESULT


def test_load_frame_sets_the_thread_budget_and_adaptive_threads(
    worker: tuple[Frontend, list[int], list[EchoService]],
) -> None:
    frontend, _, _ = worker
    frontend.send(ipc.encode_load(SPEC))
    while frontend.recv()[0] != Kind.LOAD_RESULT:
        pass
    assert frontend.thread_calls == [("budget", 2)]  # applied before the model loaded
    # Tiny batches: the adaptive worker drops to one intra-op thread (observed after each
    # batch, before its answer is sent, so the answer orders the check).
    for batch_id in range(1, 60):
        _served(frontend, batch_id)
        if ("intra", 1) in frontend.thread_calls:
            break
    assert frontend.thread_calls == [("budget", 2), ("intra", 1)]


def test_fixed_thread_budget_never_adapts(
    worker: tuple[Frontend, list[int], list[EchoService]],
) -> None:
    frontend, _, _ = worker
    frontend.send(ipc.encode_load(replace(SPEC, threads=3, adaptive_threads=False)))
    while frontend.recv()[0] != Kind.LOAD_RESULT:
        pass
    for batch_id in range(1, 20):
        _served(frontend, batch_id)
    assert frontend.thread_calls == [("budget", 3)]


def test_a_thread_budget_that_cannot_be_applied_fails_the_load(
    worker: tuple[Frontend, list[int], list[EchoService]],
) -> None:
    frontend, exit_code, services = worker
    frontend.send(ipc.encode_load(replace(SPEC, threads=99)))
    kind, header, _ = frontend.recv()
    assert (kind, ipc.decode_load_result(header)) == (
        Kind.LOAD_RESULT,
        (500, "RuntimeError: torch cannot start 99 threads"),
    )
    assert frontend.conn.recv() is None
    assert exit_code == [1] and services == []
