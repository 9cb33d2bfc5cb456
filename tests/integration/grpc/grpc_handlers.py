"""Handlers and helpers for the gRPC integration tests."""

from __future__ import annotations

import grpc

#: Body ``"<n>:<seconds>:<tag>"``: records ``start <tag>`` in the log file substituted for
#: ``@LOG@``, sends ``n`` intermediate responses ``tick <i>`` (sleeping ``seconds`` before
#: each), records ``done <tag>`` and answers ``final <tag>``.
TICKS = """
import time
from pathlib import Path

from ts.handler_utils.utils import send_intermediate_predict_response

_LOG = Path("@LOG@")


def handle(data, context):
    if data is None:
        return None
    raw = data[0].get("data") or data[0].get("body") or b"0:0:x"
    if isinstance(raw, (bytes, bytearray)):
        raw = raw.decode()
    count, seconds, tag = str(raw).split(":")
    with _LOG.open("a") as log:
        log.write(f"start {tag}\\n")
    for index in range(int(count)):
        time.sleep(float(seconds))
        send_intermediate_predict_response(
            [f"tick {index}"], context.request_ids, "Intermediate", 200, context
        )
    with _LOG.open("a") as log:
        log.write(f"done {tag}\\n")
    return [f"final {tag}"]
"""


def ticks_handler(log_path: str) -> str:
    """``TICKS`` recording into ``log_path``."""
    return TICKS.replace("@LOG@", log_path)


def bearer(key: str) -> list[tuple[str, str]]:
    """Call metadata carrying ``key``."""
    return [("authorization", f"Bearer {key}")]


def code_of(error: grpc.RpcError) -> grpc.StatusCode:
    """The status code of a failed call (``RpcError`` is also a ``Call``)."""
    return error.code()  # type: ignore[attr-defined, no-any-return]
