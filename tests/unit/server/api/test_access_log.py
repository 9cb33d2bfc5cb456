"""The batched access log."""

from __future__ import annotations

import asyncio
import json
import re
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
    await asyncio.sleep(0.2)
    text = (tmp_path / "logs" / "access_log.log").read_text()
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
