"""What the REST adapters need from ``TokenAuthority`` (``torchwick.server.security``)."""

from __future__ import annotations

from typing import Literal, Protocol


class TokenChecker(Protocol):
    """Checks bearer tokens; failures raise ``InvalidToken`` (401)."""

    def check(self, kind: Literal["inference", "management"], header: str | None) -> None:
        """Raise ``InvalidToken`` unless ``header`` is ``Bearer <current key of kind>``."""

    def check_api_key(self, header: str | None) -> None:
        """Raise ``InvalidToken`` unless ``header`` carries the API key."""


class TokenRotator(Protocol):
    """Replaces keys (``GET /token``)."""

    def rotate(self, kind: str) -> None:
        """Replace the ``kind`` key; ``BadRequest`` for an unknown kind."""
