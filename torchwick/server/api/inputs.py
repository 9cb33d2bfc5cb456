"""How an HTTP request body becomes the handler's input parameters (TorchServe's rules).

- ``multipart/form-data``: one parameter per part. A file part (one with a ``filename``)
  keeps its own Content-Type; a plain field has none.
- ``application/x-www-form-urlencoded``: one parameter per field, no content type.
- anything else: one parameter named ``body`` whose content type is the request's MIME type
  without parameters (``None`` when the request has no Content-Type).

Repeated names stay separate parameters, in order. The body is already in memory and bounded
by ``max_request_size`` when these run. Malformed form bodies raise ``BadRequest``, and so do
(400, naming the problem): more than ``max_parts`` multipart parts or urlencoded fields; a
field name that is not UTF-8 or holds a control character (NUL included); a plain field's
value (urlencoded, or a multipart part without a ``filename``) that is not UTF-8 text or
holds a NUL byte, or (with ``ascii_only``, the ``form_value_charset=ascii`` setting) is not
ASCII. File parts carry bytes and are not checked. The default accepts UTF-8 text because
TorchServe 0.12 passes such values to the handler (checked against it: ``data=h%C3%A9`` reaches
a handler as the bytes of ``hé``), so refusing them would break its clients.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from torchwick.handlers.messages import InputParameter
from torchwick.server.errors import BadRequest

_MISSING = object()
_MULTIPART = "multipart/form-data"
_URLENCODED = "application/x-www-form-urlencoded"


_MIME_CACHE: dict[bytes, str | None] = {}
_MIME_CACHE_MAX = 256


def mime_type(content_type: bytes | None) -> str | None:
    """The MIME type of a Content-Type value, lower-cased and without parameters."""
    if not content_type:
        return None
    cached = _MIME_CACHE.get(content_type, _MISSING)
    if cached is not _MISSING:
        return cached  # type: ignore[return-value]
    head = content_type.split(b";", 1)[0].strip()
    mime = head.decode("latin-1").lower() or None
    # Clients send a handful of distinct values; the bound keeps hostile ones from growing it.
    if len(_MIME_CACHE) < _MIME_CACHE_MAX and b"boundary" not in content_type:
        _MIME_CACHE[content_type] = mime
    return mime


def parse_inputs(
    content_type: bytes | None, body: bytes, max_parts: int = 256, *, ascii_only: bool = False
) -> tuple[InputParameter, ...]:
    """The input parameters of one request, by its Content-Type (see the module docs)."""
    mime = mime_type(content_type)
    if mime == _MULTIPART:
        assert content_type is not None
        return _parse_multipart(content_type, body, max_parts, ascii_only)
    if mime == _URLENCODED:
        fields = _parse_urlencoded(body)
        if len(fields) > max_parts:
            raise BadRequest(f"form has more than max_multipart_parts ({max_parts}) fields")
        return tuple(
            InputParameter(_field_name(name), _field_value(name, value, ascii_only))
            for name, value in fields
        )
    return (InputParameter("body", body, mime),)


def _parse_urlencoded(body: bytes) -> list[tuple[bytes, bytes]]:
    """``name=value`` pairs as bytes (``+`` is a space, ``%XX`` a byte), empty ones skipped.

    ``urllib.parse.parse_qsl`` on bytes round-trips values through ASCII and fails on any
    non-ASCII byte; here values stay bytes, and are checked by ``_field_value``.
    """
    fields = []
    for pair in body.split(b"&"):
        if not pair:
            continue
        name, _, value = pair.partition(b"=")
        fields.append(
            (
                unquote_to_bytes(name.replace(b"+", b" ")),
                unquote_to_bytes(value.replace(b"+", b" ")),
            )
        )
    return fields


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _field_name(raw: bytes) -> str:
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("form field name is not UTF-8") from None
    if _CONTROL.search(name):
        raise BadRequest(f"form field name {name!r} contains a control character")
    return name


def _field_value(name: bytes, value: bytes, ascii_only: bool = False) -> bytes:
    """A plain (non-file) field's value, checked to be text without NUL bytes."""
    shown = name.decode("utf-8", "replace")
    if b"\x00" in value:
        raise BadRequest(f"form field {shown!r} contains a NUL byte")
    if ascii_only:
        if not value.isascii():
            raise BadRequest(f"form field {shown!r} is not ASCII text (form_value_charset=ascii)")
        return value
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"form field {shown!r} is not UTF-8 text") from None
    return value


class _PartCollector:
    """Callbacks for the streaming multipart parser; gathers whole parts in memory."""

    def __init__(self, max_parts: int, ascii_only: bool) -> None:
        self.max_parts = max_parts
        self.ascii_only = ascii_only
        self.parts: list[InputParameter] = []
        self._data: list[bytes] = []
        self._headers: dict[bytes, bytes] = {}
        self._field: list[bytes] = []
        self._value: list[bytes] = []

    def on_part_begin(self) -> None:
        if len(self.parts) >= self.max_parts:
            raise BadRequest(
                f"multipart/form-data body has more than max_multipart_parts "
                f"({self.max_parts}) parts"
            )
        self._data = []
        self._headers = {}

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._data.append(data[start:end])

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field.append(data[start:end])

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value.append(data[start:end])

    def on_header_end(self) -> None:
        self._headers[b"".join(self._field).lower()] = b"".join(self._value)
        self._field = []
        self._value = []

    def on_part_end(self) -> None:
        disposition, options = parse_options_header(self._headers.get(b"content-disposition"))
        if disposition != b"form-data" or b"name" not in options:
            raise BadRequest("multipart part without a form-data name")
        name = _field_name(options[b"name"])
        content_type: str | None = None
        value = b"".join(self._data)
        if b"filename" in options:
            content_type = mime_type(self._headers.get(b"content-type")) or (
                "application/octet-stream"
            )
        else:
            _field_value(options[b"name"], value, self.ascii_only)
        self.parts.append(InputParameter(name, value, content_type))


def _parse_multipart(
    content_type: bytes, body: bytes, max_parts: int, ascii_only: bool
) -> tuple[InputParameter, ...]:
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise BadRequest("multipart/form-data request without a boundary")
    collector = _PartCollector(max_parts, ascii_only)
    try:
        parser = MultipartParser(
            boundary,
            {
                "on_part_begin": collector.on_part_begin,
                "on_part_data": collector.on_part_data,
                "on_part_end": collector.on_part_end,
                "on_header_field": collector.on_header_field,
                "on_header_value": collector.on_header_value,
                "on_header_end": collector.on_header_end,
            },
        )
        parser.write(body)
        parser.finalize()
    except (MultipartParseError, ValueError) as exc:
        raise BadRequest(f"malformed multipart/form-data body: {exc}") from None
    return tuple(collector.parts)
