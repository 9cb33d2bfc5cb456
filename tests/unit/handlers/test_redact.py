"""Absolute server paths never reach clients in error messages (``redact_paths``)."""

from __future__ import annotations

import json

import pytest

from torchwick.handlers.redact import redact_paths
from torchwick.handlers.service import error_response


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("No such file: '/srv/models/tmp1/model.pt'", "No such file: '.../model.pt'"),
        ("[Errno 13] Permission denied: /var/lib/x/y", "[Errno 13] Permission denied: .../y"),
        (
            "see http://host/a/b and file:///etc/passwd",
            "see http://host/a/b and file:///etc/passwd",
        ),
        ("code/handler.py not found", "code/handler.py not found"),
        ("ratio 1/2 and a/b/c", "ratio 1/2 and a/b/c"),
    ],
)
def test_redact_paths(text: str, expected: str) -> None:
    assert redact_paths(text) == expected


def test_worker_error_answers_are_redacted() -> None:
    answer = error_response("r", 500, "OSError: cannot open /opt/models/abc/weights.bin", "X")
    assert "/opt/models" not in answer.reason
    assert json.loads(answer.body)["message"] == "OSError: cannot open .../weights.bin"
