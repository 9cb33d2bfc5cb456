"""The access log (``<log_location>/access_log.log``), kept off the request path.

Text lines (``log_format=text``, the default) start with TorchServe's message, preceded by a
timestamp, and add what TorchServe's lacks::

    2024-05-01T12:00:00.123 /127.0.0.1:53022 "POST /predictions/mlp HTTP/1.1" 200 3 \
rid=0b0e... model=mlp version=1.0 bytes=42

``200 3`` are the status and the response time in milliseconds (TorchServe's two last
fields); ``rid`` is the request id (the ``x-request-id`` response header), ``model``/``version``
the model and the version that served (``-`` outside the inference routes, or the version
asked for when the request failed), ``bytes`` the response body size. With
``log_format=json`` each line is one JSON object with the same facts (``time``, ``client``,
``method``, ``path``, ``protocol``, ``status``, ``latency_ms``, ``request_id``, ``model``,
``version``, ``bytes``, and ``grpc_status`` for a gRPC call). gRPC calls are logged too
(``grpc.access``): ``"POST /<service>/<method> HTTP/2"``, the HTTP status REST would have
answered, and ``grpc=<STATUS>`` at the end of the line. Lines are queued on the event loop and
written in batches by ``BatchedLineFile``; an unwritable file never fails a request.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Protocol

from .line_file import BatchedLineFile

Entry = tuple[
    float,
    tuple[str, int] | None,
    str,
    str,
    bytes,
    str,
    int,
    float,
    str,
    tuple[str, str] | None,
    int,
    str | None,
]


def _format(batch: list[Entry]) -> str:
    lines = []
    for stamp, client, method, path, query, version, status, ms, rid, model, sent, code in batch:
        local = time.localtime(stamp)
        millis = int((stamp % 1) * 1000)
        peer = f"/{client[0]}:{client[1]}" if client else "/unix"
        target = f"{path}?{query.decode('latin-1')}" if query else path
        name, served = model if model else ("-", "-")
        lines.append(
            f"{time.strftime('%Y-%m-%dT%H:%M:%S', local)}.{millis:03d} {peer} "
            f'"{method} {target} HTTP/{version}" {status} {ms:.0f} '
            f"rid={rid or '-'} model={name} version={served or '-'} bytes={sent}"
            + (f" grpc={code}\n" if code else "\n")
        )
    return "".join(lines)


def _format_json(batch: list[Entry]) -> str:
    lines = []
    for stamp, client, method, path, query, version, status, ms, rid, model, sent, code in batch:
        record = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(stamp))
            + f".{int((stamp % 1) * 1000):03d}",
            "client": f"{client[0]}:{client[1]}" if client else "unix",
            "method": method,
            "path": f"{path}?{query.decode('latin-1')}" if query else path,
            "protocol": f"HTTP/{version}",
            "status": status,
            "latency_ms": round(ms, 3),
            "request_id": rid,
            "model": model[0] if model else None,
            "version": (model[1] or None) if model else None,
            "bytes": sent,
        }
        if code:
            record["grpc_status"] = code
        lines.append(json.dumps(record, separators=(",", ":")) + "\n")
    return "".join(lines)


class AccessRecorder(Protocol):
    """Takes one access-log entry (``AccessLog.record``; the adapters depend on this only)."""

    def record(
        self,
        *,
        client: tuple[str, int] | None,
        method: str,
        path: str,
        query: bytes,
        version: str,
        status: int,
        ms: float,
        request_id: str = "",
        model: tuple[str, str] | None = None,
        sent: int = 0,
        grpc_status: str | None = None,
    ) -> None:
        """Queue one line (formatting happens later, off the event loop)."""


class AccessLog:
    """Buffered, batched access log writer; see the module docs."""

    def __init__(
        self,
        path: Path,
        *,
        interval: float = 1.0,
        max_lines: int = 8192,
        json_lines: bool = False,
    ) -> None:
        self.path = path
        self._file: BatchedLineFile[Entry] = BatchedLineFile(
            path, _format_json if json_lines else _format, interval=interval, max_lines=max_lines
        )

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Open the file and start the periodic flush on ``loop`` (see ``BatchedLineFile``)."""
        self._file.start(loop)

    def record(
        self,
        *,
        client: tuple[str, int] | None,
        method: str,
        path: str,
        query: bytes,
        version: str,
        status: int,
        ms: float,
        request_id: str = "",
        model: tuple[str, str] | None = None,
        sent: int = 0,
        grpc_status: str | None = None,
    ) -> None:
        """Queue one line (hot path: one tuple append; formatting and I/O happen later).

        ``grpc_status`` (a gRPC status name) is given for gRPC calls only."""
        self._file.record(
            (
                time.time(),
                client,
                method,
                path,
                query,
                version,
                status,
                ms,
                request_id,
                model,
                sent,
                grpc_status,
            )
        )

    def close(self) -> None:
        """Write what is pending and close the file. Lines recorded afterwards are dropped."""
        self._file.close()
