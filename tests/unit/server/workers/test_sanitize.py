"""What a handler returns is made frameable by the worker, one request at a time."""

from __future__ import annotations

from typing import Any

from torchwick.handlers.messages import MetricRecord, PredictResponse
from torchwick.server.workers import ipc
from torchwick.server.workers.ipc import Kind
from torchwick.server.workers.sanitize import checked_metrics, checked_responses


class Scalar:
    """Like a NumPy scalar: convertible, but not a Python number."""

    def __float__(self) -> float:
        return 2.5


def _loose(**fields: Any) -> PredictResponse:
    return PredictResponse(**fields)


def test_well_typed_responses_pass_untouched() -> None:
    responses = [PredictResponse("a", body=b"x"), PredictResponse("b", headers=(("k", "v"),))]
    assert checked_responses(responses, 10) is responses


def test_each_bad_response_is_repaired_or_replaced_alone() -> None:
    responses = [
        _loose(request_id="a", headers=(("x-count", 3),), body=bytearray(b"ok")),
        _loose(request_id="b", body="text"),
        _loose(request_id="c", body=b"y" * 11),
        PredictResponse("d", body=b"fine"),
    ]
    a, b, c, d = checked_responses(responses, 10)
    assert (a.status, a.headers, a.body) == (200, (("x-count", "3"),), b"ok")
    assert (b.status, b.reason) == (500, "Response body is str, not bytes")
    assert c.status == 500 and "exceeds max_response_size (10 bytes)" in c.reason
    assert d is responses[3]
    # What comes out can always be framed and read back by the frontend.
    buffers = ipc.encode_responses(Kind.PREDICT_RESULT, 1, [a, b, c, d])
    frame = b"".join(buffers)
    _, header_len, _ = ipc.parse_prefix(frame[: ipc.PREFIX_SIZE])
    header = frame[ipc.PREFIX_SIZE : ipc.PREFIX_SIZE + header_len]
    assert ipc.decode_responses(header, frame[ipc.PREFIX_SIZE + header_len :])[1] == [a, b, c, d]


def test_metrics_are_converted_or_dropped() -> None:
    records = [
        MetricRecord("A", Scalar(), "ms", dimensions=(("Level", 1),)),  # type: ignore[arg-type]
        MetricRecord("B", object(), "ms"),  # type: ignore[arg-type]
    ]
    [a] = checked_metrics(records)
    assert (a.name, a.value, a.dimensions) == ("A", 2.5, (("Level", "1"),))
