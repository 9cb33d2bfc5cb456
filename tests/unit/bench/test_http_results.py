"""The HTTP request builder and response reader, and the ``--json`` document's schema."""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from pathlib import Path

import jsonschema
import pytest

from torchwick.bench.http import build_request, read_response
from torchwick.bench.load import PointOutcome
from torchwick.bench.options import parse_options
from torchwick.bench.results import PointRecord, document, ratios, schema, summarize, write_json


def test_build_request() -> None:
    request = build_request(
        "POST", "127.0.0.1:8080", "/predictions/m", b"[1]", [("Content-Type", "application/json")]
    )
    assert request == (
        b"POST /predictions/m HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
        b"Content-Type: application/json\r\nContent-Length: 3\r\n\r\n[1]"
    )
    assert build_request("GET", "h", "/ping", None) == b"GET /ping HTTP/1.1\r\nHost: h\r\n\r\n"
    with pytest.raises(ValueError, match="invalid header"):
        build_request("GET", "h", "/", None, [("X", "a\r\nEvil: 1")])


async def _read(data: bytes) -> list[tuple[int, bool]]:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    out = []
    while not reader.at_eof():
        out.append(await read_response(reader))
    return out


async def _read_head(data: bytes) -> list[tuple[int, bool]]:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return [await read_response(reader, head_request=True) for _ in range(2)]


def test_read_response_frames_by_length_chunks_and_close() -> None:
    data = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
        b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        b"HTTP/1.1 204 No Content\r\n\r\n"
        b"HTTP/1.1 503 Busy\r\nConnection: close\r\n\r\nthe rest until close"
    )
    assert asyncio.run(_read(data)) == [(200, True), (404, True), (204, True), (503, False)]
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nHTTP/1.1 404 No\r\nContent-Length: 0\r\n\r\n"
    )
    assert asyncio.run(_read_head(head)) == [(200, True), (404, True)]
    with pytest.raises(ValueError, match="not an HTTP"):
        asyncio.run(_read(b"SSH-2.0-OpenSSH\r\n\r\n"))
    with pytest.raises(asyncio.IncompleteReadError):
        asyncio.run(_read(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"))


def _record(target: str, load: float, repeat: int, ms: list[float], **counts: int) -> PointRecord:
    out = PointOutcome(window_s=1.0, ok_in_window=len(ms), latencies_s=[v / 1e3 for v in ms])
    out.statuses = Counter({401: counts.get("s401", 0)}) if counts.get("s401") else Counter()
    out.timeouts = counts.get("timeouts", 0)
    out.requests = len(ms) + sum(counts.values())
    return PointRecord.of(target, load, repeat, out)


def test_summaries_and_ratios() -> None:
    points = [
        _record("A", 1, 0, [1, 2, 3]),
        _record("B", 1, 0, [2, 4, 6, 8]),
        _record("A", 1, 1, [1, 1, 1, 1, 1]),
        _record("B", 1, 1, [], s401=4),
    ]
    summaries = summarize(points)
    a, b = summaries
    assert (a.target, a.repeats, a.throughput_rps) == ("A", 2, 4.0)
    assert b.throughput_rps == 2.0 and b.errors == 4 and b.statuses == {401: 4}
    assert b.p50_ms == 4.0  # the repeat with no answer has no p50 and is left out
    (r,) = ratios(summaries)
    assert r.throughput == 2.0
    assert r.p50 == pytest.approx(1.5 / 4.0)


def test_the_json_document_follows_its_schema(tmp_path: Path) -> None:
    options = parse_options(
        ["http://127.0.0.1:1/p", "--compare", "http://127.0.0.1:2/p", "--token", "secret",
         "--concurrency", "1,4", "--duration", "1"]
    )  # fmt: skip
    points = [
        _record("A", 1, 0, [1, 2]),
        _record("B", 1, 0, [3], timeouts=2),
        _record("A", 4, 0, [], s401=3),
        _record("B", 4, 0, [5, 6]),
    ]
    value = document(
        options,
        {"A": "http://127.0.0.1:1/p", "B": "http://127.0.0.1:2/p"},
        {"A": "one", "B": "http://127.0.0.1:2/p"},
        points,
        started_at="2026-12-02T00:00:00+00:00",
        finished_at="2026-12-02T00:00:05+00:00",
        complete=True,
        loop="asyncio",
    )
    jsonschema.validate(value, schema())
    path = tmp_path / "out.json"
    write_json(path, value)
    text = path.read_text()
    assert "secret" not in text  # header values (tokens) are never written
    loaded = json.loads(text)
    assert loaded["settings"]["header_names"] == ["Authorization"]
    assert loaded["points"][2]["latency_ms"]["p50"] is None
    assert loaded["points"][2]["errors"] == {
        "total": 3, "status": {"401": 3}, "connection": 0, "timeout": 0, "unfinished": 0
    }  # fmt: skip
    # A had no 2xx at c=4: its throughput ratio is 0, its p50 ratio has no value.
    assert loaded["ratios"][1]["throughput"] == 0.0
    assert loaded["ratios"][1]["p50"] is None
    assert loaded["points"][0]["load"] == 1 and isinstance(loaded["points"][0]["load"], int)
    broken = dict(value, mode="sideways")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema())
    assert not math.isnan(loaded["summary"][0]["throughput_rps"])
