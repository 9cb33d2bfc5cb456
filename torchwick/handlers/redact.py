"""Removing the server's absolute paths from messages that go to clients.

A handler's exception, a failed load or a worker crash is described to the client in its error
JSON (and in describe's ``lastError``). Python's own texts name files by absolute path
(``No such file or directory: '/srv/models/tmp1x2/model.pt'``), which tells an attacker how the
server is laid out. ``redact_paths`` keeps the last component, which is what the model's author
needs (``.../model.pt``). The full text stays in the server's logs.

A path is a ``/`` that starts a word (not after a letter, digit, ``:``, ``/`` or ``.``, so URL
paths such as ``http://host/a/b`` and relative names such as ``code/handler.py`` are kept)
followed by at least two components.
"""

from __future__ import annotations

import re

_ABSOLUTE = re.compile(r"(?<![\w:/.~-])/(?:[\w.@+~-]+/)+([\w.@+~-]*)")


def redact_paths(text: str) -> str:
    """``text`` with every absolute path replaced by ``.../<last component>``."""
    if "/" not in text:
        return text
    return _ABSOLUTE.sub(lambda match: f".../{match.group(1)}", text)
