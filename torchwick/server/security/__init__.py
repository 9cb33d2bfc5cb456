"""Security: bearer-token authorization and private-file writing.

The REST and gRPC layers use ``TokenAuthority`` (see ``tokens``): ``create(settings, clock)``
(None when disabled), ``check(kind, header)``, ``check_api_key(header)``, ``rotate(kind)`` and
``close()``. Failures raise ``torchwick.server.errors.InvalidToken`` (HTTP 401).
"""

from __future__ import annotations

from .files import write_private_file
from .tokens import (
    FAILURE_MESSAGE,
    KeyFile,
    TokenAuthority,
    TokenKind,
    bearer_token,
    read_key_file,
)

__all__ = [
    "FAILURE_MESSAGE",
    "KeyFile",
    "TokenAuthority",
    "TokenKind",
    "bearer_token",
    "read_key_file",
    "write_private_file",
]
