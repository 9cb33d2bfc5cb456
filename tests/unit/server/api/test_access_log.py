"""The batched access log."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

from torchwick.server.observability.access_log import AccessLog

LINE = re.compile(
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} /127\.0\.0\.1:5000 "
    r'"POST /predictions/m\?x=1 HTTP/1\.1" 200 3 rid=- model=- version=- bytes=0\n'
)


async def test_lines_are_written_in_batches_and_on_close(tmp_path: Path) -> None:
    log = AccessLog(tmp_path / "logs" / "access_log.log", interval=0.05)
    log.start(asyncio.get_running_loop())
    entry = {
        "client": ("127.0.0.1", 5000),
        "method": "POST",
        "path": "/predictions/m",
        "query": b"x=1",
        "version": "1.1",
        "status": 200,
        "ms": 2.6,
    }
    log.record(**entry)  # type: ignore[arg-type]
    written = tmp_path / "logs" / "access_log.log"
    deadline = time.monotonic() + 10
    while not (written.exists() and written.read_text()) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)  # polling for the periodic flush, with a deadline
    text = written.read_text()
    assert LINE.fullmatch(text), text
    log.record(**{**entry, "client": None, "query": b"", "status": 404})  # type: ignore[arg-type]
    log.close()
    lines = (tmp_path / "logs" / "access_log.log").read_text().splitlines()
    assert len(lines) == 2
    assert lines[1].endswith(
        ' /unix "POST /predictions/m HTTP/1.1" 404 3 rid=- model=- version=- bytes=0'
    )
    log.record(**entry)  # type: ignore[arg-type]  # after close: dropped, never raises


async def test_inference_fields_and_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "access_log.log"
    log = AccessLog(path, json_lines=True)
    log.start(asyncio.get_running_loop())
    log.record(
        client=("127.0.0.1", 5000),
        method="POST",
        path="/predictions/m",
        query=b"",
        version="1.1",
        status=200,
        ms=2.25,
        request_id="abc",
        model=("m", "2.0"),
        sent=17,
    )
    log.close()
    record = json.loads(path.read_text())
    assert record["request_id"] == "abc"
    assert (record["model"], record["version"], record["bytes"]) == ("m", "2.0", 17)
    assert (record["status"], record["latency_ms"], record["path"]) == (200, 2.25, "/predictions/m")


async def test_grpc_calls_name_their_status(tmp_path: Path) -> None:
    from torchwick.server.grpc.access import peer_address

    assert peer_address("ipv4:127.0.0.1:5000") == ("127.0.0.1", 5000)
    assert peer_address("ipv6:[::1]:5001") == ("::1", 5001)
    assert peer_address("unix:/tmp/s") is None
    call = {
        "client": ("127.0.0.1", 5000),
        "method": "POST",
        "path": "/inference.GRPCInferenceService/ModelInfer",
        "query": b"",
        "version": "2",
        "status": 404,
        "ms": 1.0,
        "grpc_status": "NOT_FOUND",
    }
    text_log = AccessLog(tmp_path / "text.log")
    text_log.start(asyncio.get_running_loop())
    text_log.record(**call)  # type: ignore[arg-type]
    text_log.close()
    line = (tmp_path / "text.log").read_text()
    assert '"POST /inference.GRPCInferenceService/ModelInfer HTTP/2" 404 1 ' in line
    assert line.endswith(" bytes=0 grpc=NOT_FOUND\n")
    json_log = AccessLog(tmp_path / "json.log", json_lines=True)
    json_log.start(asyncio.get_running_loop())
    json_log.record(**call)  # type: ignore[arg-type]
    json_log.close()
    record = json.loads((tmp_path / "json.log").read_text())
    assert (record["protocol"], record["status"], record["grpc_status"]) == (
        "HTTP/2",
        404,
        "NOT_FOUND",
    )
