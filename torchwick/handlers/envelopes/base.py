"""``BaseEnvelope``: TorchServe's request-envelope contract, request by request.

An envelope unwraps each request's body into the items a handler receives (``parse_request``)
and wraps each request's share of the handler's results back (``format_request``). The model
service applies the model's ``service_envelope`` this way, so a malformed body fails only its
own request (``EnvelopeError``, 400) and every other request of the batch runs. The items of
all well-formed requests of a batch go to the handler in one call, in request order.

``handle(data, context)`` / ``parse_input`` / ``format_output`` keep TorchServe's class API
(``envelope = JSONEnvelope(handler.handle); envelope.handle(rows, context)``) for handler unit
tests; there a malformed row raises ``EnvelopeError`` for the whole call.

Failure mode: ``EnvelopeError`` (an ``InvalidInput``) naming the envelope and what was wrong.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import InvalidInput


class EnvelopeError(InvalidInput):
    """A request body that does not have the envelope's shape (400 for that request)."""


@dataclass(frozen=True, slots=True)
class Parsed:
    """One request unwrapped: the handler items and what formatting its answer needs."""

    items: list[Any]
    explain: bool = False
    #: Envelope-specific facts; the caller adds ``request_id`` (the server's id).
    meta: dict[str, Any] = field(default_factory=dict)


def body_of(row: Any) -> Any:
    """A request row's payload: ``data``, else ``body`` (TorchServe's ``or`` idiom)."""
    if isinstance(row, Mapping):
        return row.get("data") or row.get("body")
    return row


def json_body(name: str, row: Any, *, allow_row: bool = False) -> dict[str, Any]:
    """The request's JSON object (bytes are decoded here); ``EnvelopeError`` otherwise."""
    value = body_of(row)
    if value is None and allow_row and isinstance(row, Mapping):
        value = row
    if isinstance(value, (bytes, bytearray)):
        try:
            value = json.loads(bytes(value).decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise EnvelopeError(
                f"service envelope {name!r}: the request body is not valid JSON"
            ) from None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise EnvelopeError(
                f"service envelope {name!r}: the request body is not valid JSON"
            ) from None
    if not isinstance(value, dict):
        raise EnvelopeError(
            f"service envelope {name!r}: the request body must be a JSON object, "
            f"got {type(value).__name__}"
        )
    return value


def header_is_true(context: Any, idx: int, name: str) -> bool:
    """Whether request ``idx`` has header ``name`` set to ``True`` (any context flavour)."""
    getter = getattr(context, "get_request_header", None)
    if getter is None:
        return False
    try:
        return str(getter(idx, name)).lower() == "true"
    except (IndexError, AttributeError, KeyError):
        return False


class BaseEnvelope:
    """Subclasses implement ``parse_request`` and ``format_request``."""

    #: The ``service_envelope`` value that selects this envelope.
    name: ClassVar[str] = "base"

    def __init__(self, handle_fn: Callable[[Any, Any], Any] | None = None) -> None:
        self._handle_fn = handle_fn
        self.context: Any = None
        self._parsed: list[Parsed] = []

    # Per request -------------------------------------------------------------------------

    def parse_request(self, row: Any, explain: bool) -> Parsed:
        """The handler items of one request (``EnvelopeError`` when malformed)."""
        raise NotImplementedError

    def format_request(self, parsed: Parsed, outputs: list[Any], context: Any) -> Any:
        """One request's answer from its share of the handler's results."""
        raise NotImplementedError

    # TorchServe's class API --------------------------------------------------------------

    def parse_input(self, data: Sequence[Any]) -> list[Any]:
        """All requests' items, joined; remembers each request's share for ``format_output``."""
        self._parsed = []
        getter = getattr(self.context, "get_request_id", None)
        for idx, row in enumerate(data):
            parsed = self.parse_request(row, header_is_true(self.context, idx, "explain"))
            parsed.meta["request_id"] = getter(idx) if getter is not None else None
            self._parsed.append(parsed)
        return [item for parsed in self._parsed for item in parsed.items]

    def format_output(self, data: Sequence[Any]) -> list[Any]:
        """One answer per request parsed by the last ``parse_input``."""
        answers, cursor = [], 0
        for parsed in self._parsed:
            share = list(data[cursor : cursor + len(parsed.items)])
            cursor += len(parsed.items)
            answers.append(self.format_request(parsed, share, self.context))
        return answers

    def handle(self, data: Any, context: Any) -> Any:
        """Unwrap, call the wrapped handler, wrap (an awaitable result is awaited first)."""
        if self._handle_fn is None:
            raise RuntimeError(f"{type(self).__name__} was built without a handler function")
        self.context = context
        if data:
            data = self.parse_input(data)
        results = self._handle_fn(data, context)
        if inspect.isawaitable(results):
            return self._format_later(results)
        return self.format_output(results) if results else results

    async def _format_later(self, pending: Any) -> Any:
        results = await pending
        return self.format_output(results) if results else results
