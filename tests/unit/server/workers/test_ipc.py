"""Frame codecs and the two stream readers: round trips, truncation, oversize, corruption."""

from __future__ import annotations

import socket
import struct
import threading
from typing import Any

import msgpack
import pytest

from torchwick.handlers.messages import (
    InputParameter,
    LoadSpec,
    MetricRecord,
    PredictRequest,
    PredictResponse,
)
from torchwick.server.workers import ipc
from torchwick.server.workers.ipc import FrameTooLargeError, Kind, ProtocolError
from torchwick.server.workers.stream import BlockingFrameSocket, FrameDecoder

BATCH = [
    PredictRequest(
        "a",
        (("content-type", "application/json"), ("explain", "False")),
        (InputParameter("body", b'{"x": 1}', "application/json"),),
    ),
    PredictRequest("b", (), (InputParameter("data", b""), InputParameter("img", b"\x00\xff" * 9))),
    PredictRequest("c"),
]
RESPONSES = [
    PredictResponse("a", 200, "", "application/json", (("x-h", "v"),), b"[1, 2]"),
    PredictResponse("b", 507, "Out of resources", None, (), b""),
    PredictResponse("c", 200, "", "text/plain", (), b"partial", final=False),
]


def _split(buffers: ipc.Buffers) -> tuple[int, bytes, bytes]:
    frame = b"".join(buffers)
    kind, header_len, payload_len = ipc.parse_prefix(frame[: ipc.PREFIX_SIZE])
    assert len(frame) == ipc.PREFIX_SIZE + header_len + payload_len
    header = frame[ipc.PREFIX_SIZE : ipc.PREFIX_SIZE + header_len]
    return kind, header, frame[ipc.PREFIX_SIZE + header_len :]


def test_requests_round_trip_keep_bodies_as_separate_buffers() -> None:
    buffers = ipc.encode_requests(Kind.PREDICT, 7, BATCH)
    assert BATCH[0].parameters[0].value in buffers  # the very object, not a re-encoding
    kind, header, payload = _split(buffers)
    assert kind == Kind.PREDICT
    assert ipc.decode_requests(header, payload) == (7, BATCH)
    assert ipc.decode_requests(header, memoryview(payload)) == (7, BATCH)


def test_responses_round_trip() -> None:
    kind, header, payload = _split(ipc.encode_responses(Kind.PREDICT_RESULT, 3, RESPONSES))
    assert kind == Kind.PREDICT_RESULT
    assert ipc.decode_responses(header, memoryview(payload)) == (3, RESPONSES)


def test_single_body_is_not_copied_on_decode() -> None:
    body = b"x" * 1000
    header = msgpack.packb((1, [("a", 200, "", None, (), len(body), True)]))
    (_, [response]) = ipc.decode_responses(header, body)
    assert response.body is body


def test_control_frames_round_trip() -> None:
    yaml_with_int_keys: dict[Any, Any] = {1: {"a": None}}
    spec = LoadSpec(
        "m",
        "1.0",
        "/tmp/m",
        "h.py:handle",
        batch_size=4,
        gpu_id=1,
        manifest={"model": {"x": [1]}},
        model_yaml_config=yaml_with_int_keys,
        limit_max_image_pixels=False,
        decode_input_request=False,
        service_envelope="json",
        threads=3,
        adaptive_threads=True,
        max_response_size=1234,
    )
    _, header, _ = _split(ipc.encode_load(spec))
    assert ipc.decode_load(header) == spec  # every field, worker settings included
    _, header, _ = _split(ipc.encode_load_result(507, "System out of memory"))
    assert ipc.decode_load_result(header) == (507, "System out of memory")
    _, header, _ = _split(ipc.encode_hello("tok", 42))
    assert ipc.decode_hello(header) == ("tok", 42)
    _, header, _ = _split(ipc.encode_ping(9))
    assert ipc.decode_seq(header) == 9
    records = [MetricRecord("HandlerTime", 1.5, "ms", "gauge", (("Level", "Model"),), "a")]
    _, header, _ = _split(ipc.encode_metrics(records))
    assert ipc.decode_metrics(header) == records
    assert _split(ipc.encode_shutdown())[0] == Kind.SHUTDOWN


def test_load_spec_values_msgpack_cannot_carry_become_text() -> None:
    import datetime

    spec = LoadSpec("m", "1", "/d", "h", model_yaml_config={"when": datetime.date(2024, 1, 2)})
    _, header, _ = _split(ipc.encode_load(spec))
    assert ipc.decode_load(header).model_yaml_config == {"when": "2024-01-02"}


@pytest.mark.parametrize(
    "header",
    [
        msgpack.packb((1, [("a", "200", "", None, (), 0, True)])),  # status not int
        msgpack.packb((1, [("a", 200, "", None, (("k", 1),), 0, True)])),  # header value
        msgpack.packb((1, [("a", 200, "", None, (), 5, True)])),  # lengths beyond payload
        msgpack.packb((1, [("a", 200)])),  # wrong arity
        b"\xc1",  # not msgpack
    ],
)
def test_malformed_responses_raise_protocol_error(header: bytes) -> None:
    with pytest.raises(ProtocolError):
        ipc.decode_responses(header, b"")


def test_bad_prefix_raises_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        ipc.parse_prefix(struct.pack("<2sBBIQ", b"XX", 1, 4, 0, 0))
    with pytest.raises(ProtocolError):
        ipc.parse_prefix(struct.pack("<2sBBIQ", b"TW", 99, 4, 0, 0))
    with pytest.raises(ProtocolError):
        ipc.parse_prefix(struct.pack("<2sBBIQ", b"TW", 1, 4, ipc.MAX_HEADER_SIZE + 1, 0))


class _Collector:
    def __init__(self, limit: int) -> None:
        self.frames: list[tuple[int, bytes, bytes]] = []
        self.oversize: list[FrameTooLargeError] = []
        self.decoder = FrameDecoder(self.on_frame, self.oversize.append, max_payload=limit)

    def on_frame(self, kind: int, header: memoryview, payload: memoryview) -> None:
        self.frames.append((kind, bytes(header), bytes(payload)))

    def feed(self, data: bytes, chunk: int) -> None:
        # As the event loop does: each read fills at most the buffer it was given.
        view = memoryview(data)
        while view:
            buf = self.decoder.get_buffer(-1)
            n = min(chunk, len(view), len(buf))
            buf[:n] = view[:n]
            view = view[n:]
            self.decoder.feed(n)


@pytest.mark.parametrize("chunk", [1, 7, 4096, 1 << 20])
def test_decoder_reassembles_frames_from_any_chunking(chunk: int) -> None:
    big = PredictResponse("big", body=bytes(range(256)) * 2000)  # 512 kB: forces buffer growth
    frames = [
        ipc.encode_responses(Kind.PREDICT_RESULT, 1, RESPONSES),
        ipc.encode_ping(3),
        ipc.encode_responses(Kind.PREDICT_RESULT, 2, [big]),
        ipc.encode_pong(4),
    ]
    stream = b"".join(b"".join(f) for f in frames)
    collector = _Collector(limit=1 << 20)
    collector.feed(stream[:-1], chunk)
    assert len(collector.frames) == 3  # a truncated frame is held back, not dispatched
    collector.feed(stream[-1:], chunk)
    kinds = [k for k, _, _ in collector.frames]
    assert kinds == [Kind.PREDICT_RESULT, Kind.PING, Kind.PREDICT_RESULT, Kind.PONG]
    _, header, payload = collector.frames[2]
    assert ipc.decode_responses(header, payload) == (2, [big])


@pytest.mark.parametrize("chunk", [3, 100_000])
def test_decoder_skips_oversize_frames_and_stays_in_sync(chunk: int) -> None:
    small = ipc.encode_responses(Kind.PREDICT_RESULT, 1, [PredictResponse("a", body=b"ok")])
    huge = ipc.encode_responses(Kind.PREDICT_RESULT, 2, [PredictResponse("b", body=b"x" * 5000)])
    collector = _Collector(limit=1000)
    collector.feed(b"".join([*huge, *small]), chunk)
    assert [(e.kind, e.size, e.limit) for e in collector.oversize] == [
        (Kind.PREDICT_RESULT, 5000, 1000)
    ]
    assert "exceeds the limit" in str(collector.oversize[0])
    [(_kind, header, payload)] = collector.frames
    assert ipc.decode_responses(header, payload)[0] == 1


def test_decoder_rejects_garbage() -> None:
    collector = _Collector(limit=100)
    with pytest.raises(ProtocolError):
        collector.feed(b"GARBAGE-GARBAGE-GARBAGE", 100)


def _pair(max_payload: int = 1 << 40) -> tuple[BlockingFrameSocket, socket.socket]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return BlockingFrameSocket(a, max_payload=max_payload), b


def test_blocking_socket_round_trip_with_gathered_send() -> None:
    conn, peer = _pair()
    other = BlockingFrameSocket(peer)
    # Many large buffers: goes through sendmsg in chunks with partial sends.
    batch = [PredictResponse(str(i), body=bytes([i % 256]) * 70_000) for i in range(40)]
    sender = threading.Thread(
        target=other.send, args=(ipc.encode_responses(Kind.PREDICT_RESULT, 5, batch),)
    )
    sender.start()
    frame = conn.recv()
    sender.join(5)
    assert frame is not None
    _kind, header, payload = frame
    assert ipc.decode_responses(header, payload) == (5, batch)
    other.close()
    assert conn.recv() is None  # clean end of stream between frames
    conn.close()


def test_blocking_socket_truncated_frame_is_a_protocol_error() -> None:
    conn, peer = _pair()
    data = b"".join(ipc.encode_responses(Kind.PREDICT_RESULT, 1, RESPONSES))
    peer.sendall(data[:-3])
    peer.close()
    with pytest.raises(ProtocolError, match="stream ended inside a frame"):
        conn.recv()
    conn.close()


def test_blocking_socket_skips_oversize_frame() -> None:
    conn, peer = _pair(max_payload=10)
    peer.sendall(b"".join(ipc.encode_requests(Kind.PREDICT, 1, BATCH)))
    peer.sendall(b"".join(ipc.encode_ping(2)))
    with pytest.raises(FrameTooLargeError):
        conn.recv()
    frame = conn.recv()
    assert frame is not None and frame[0] == Kind.PING
    peer.close()
    conn.close()


def test_malformed_metric_entries_are_dropped_not_fatal() -> None:
    good = ("Ok", 1.0, "ms", "gauge", (), None)
    header = msgpack.packb(([good, ("Bad", "x", "ms", "gauge", (), None), (1, 2), good],))
    assert [m.name for m in ipc.decode_metrics(header)] == ["Ok", "Ok"]
