"""``body`` envelope: each request's ``data``/``body`` value is handed on as it is."""

from __future__ import annotations

from typing import Any

from .base import BaseEnvelope, Parsed, body_of


class BodyEnvelope(BaseEnvelope):
    """One item per request (the raw payload); the handler's item is the answer."""

    name = "body"

    def parse_request(self, row: Any, explain: bool) -> Parsed:
        return Parsed([body_of(row)], explain)

    def format_request(self, parsed: Parsed, outputs: list[Any], context: Any) -> Any:
        return outputs[0]
