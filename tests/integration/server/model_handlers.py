"""Handler sources for the server integration tests, written the way TorchServe users write
them (module-level ``handle`` functions and ``ts.*`` imports), so the tests also show that
such handlers run unchanged.

Each is archived in a test with ``tests.support.server.build_archive``.
"""

from __future__ import annotations

#: Returns the body as is (``data`` for form posts, else ``body``).
ECHO = """
def handle(data, context):
    if data is None:
        return None
    out = []
    for row in data:
        value = row.get("data") if row.get("data") is not None else row.get("body")
        out.append(value if value is not None else b"")
    return out
"""

#: Answers JSON describing what the handler received: parameters, their types, and headers.
INSPECT = """
import json


def _describe(value):
    if isinstance(value, (bytes, bytearray)):
        return {"kind": "bytes", "value": bytes(value).decode("latin-1")}
    if isinstance(value, str):
        return {"kind": "str", "value": value}
    return {"kind": type(value).__name__, "value": value}


def handle(data, context):
    if data is None:
        return None
    out = []
    for idx, row in enumerate(data):
        headers = context.get_all_request_header(idx)
        out.append(json.dumps({
            "params": {name: _describe(value) for name, value in row.items()},
            "headers": {k: v for k, v in headers.items() if isinstance(v, str)},
            "request_id": context.get_request_id(idx),
            "batch": len(data),
        }))
    return out
"""

#: Sets status, reason, content type and a custom header from the request's JSON body.
STATUS = """
import json


def handle(data, context):
    if data is None:
        return None
    out = []
    for idx, row in enumerate(data):
        spec = row.get("body")
        if isinstance(spec, (bytes, bytearray)):
            spec = json.loads(spec)
        context.set_response_status(spec.get("status", 200), spec.get("reason", ""), idx)
        if "content_type" in spec:
            context.set_response_content_type(idx, spec["content_type"])
        for key, value in spec.get("headers", {}).items():
            context.set_response_header(idx, key, value)
        out.append(spec.get("body", "done"))
    return out
"""

#: Three intermediate chunks, then the final one (TorchServe's streaming test, same output).
STREAM = """
from ts.handler_utils.utils import send_intermediate_predict_response


def handle(data, context):
    if data is None:
        return None
    for _ in range(3):
        send_intermediate_predict_response(
            ["hello"], context.request_ids, "Intermediate", 200, context
        )
    return ["hello world "]
"""

#: Sleeps the seconds given in the body (``"<seconds>:<tag>"``), then says what it served.
#: Every request that actually runs is recorded in the file substituted for ``@LOG@``
#: (``slow_handler(path)``).
SLOW = """
import time
from pathlib import Path

_LOG = Path("@LOG@")


def handle(data, context):
    if data is None:
        return None
    out = []
    for idx, row in enumerate(data):
        raw = row.get("body") or row.get("data") or b"0"
        if isinstance(raw, (bytes, bytearray)):
            raw = raw.decode()
        seconds, _, tag = str(raw).partition(":")
        with _LOG.open("a") as log:
            log.write(f"start {tag}\\n")
        time.sleep(float(seconds or 0))
        with _LOG.open("a") as log:
            log.write(f"done {tag}\\n")
        out.append(f"slept {seconds} {tag}")
    return out
"""

#: Reports the size of the batch it was given (sleeps a little so batches can form).
BATCH = """
import json
import time


def handle(data, context):
    if data is None:
        return None
    time.sleep(0.005)
    return [json.dumps({"batch": len(data)}) for _ in data]
"""

#: Rejects inputs that are not JSON objects with a numeric "x" (400), else doubles x.
VALIDATE = """
from ts.utils.util import PredictionException


def handle(data, context):
    if data is None:
        return None
    out = []
    for row in data:
        body = row.get("body")
        if not isinstance(body, dict) or not isinstance(body.get("x"), (int, float)):
            raise PredictionException("input must be a JSON object with a number x", 400)
        out.append({"y": body["x"] * 2})
    return out
"""

#: A BaseHandler subclass serving a TorchScript MLP (64 -> 10) on JSON lists of 64 floats.
MLP = """
import json

import torch
from ts.torch_handler.base_handler import BaseHandler


class MLPHandler(BaseHandler):
    def preprocess(self, data):
        rows = []
        for row in data:
            value = row.get("data") or row.get("body")
            if isinstance(value, (bytes, bytearray)):
                value = json.loads(value)
            rows.append(torch.tensor(value, dtype=torch.float32))
        return torch.stack(rows)

    def postprocess(self, data):
        return [{"argmax": int(row.argmax()), "size": len(row)} for row in data]
"""

#: Answers its worker's process id (for crash tests).
PID = """
import os


def handle(data, context):
    if data is None:
        return None
    return [str(os.getpid()) for _ in data]
"""


def slow_handler(log_path: str) -> str:
    """``SLOW`` recording the requests it runs in ``log_path``."""
    return SLOW.replace("@LOG@", log_path)
