"""Request bodies to handler input parameters (TorchServe's rules)."""

from __future__ import annotations

import httpx
import pytest

from torchwick.handlers.messages import InputParameter
from torchwick.server.api.inputs import mime_type, parse_inputs
from torchwick.server.errors import BadRequest


def test_mime_type_drops_parameters_and_case() -> None:
    assert mime_type(b"Application/JSON; charset=utf-8") == "application/json"
    assert mime_type(b"text/plain") == "text/plain"
    assert mime_type(None) is None
    assert mime_type(b"") is None


def test_raw_and_json_bodies_are_one_body_parameter() -> None:
    assert parse_inputs(b"application/json", b"{}") == (
        InputParameter("body", b"{}", "application/json"),
    )
    assert parse_inputs(None, b"raw") == (InputParameter("body", b"raw", None),)
    assert parse_inputs(b"image/png; q=1", b"\x89") == (
        InputParameter("body", b"\x89", "image/png"),
    )


def test_urlencoded_fields_keep_order_and_repeats() -> None:
    params = parse_inputs(b"application/x-www-form-urlencoded", b"a=1&b=%20x&a=2&empty=")
    assert params == (
        InputParameter("a", b"1"),
        InputParameter("b", b" x"),
        InputParameter("a", b"2"),
        InputParameter("empty", b""),
    )


def test_multipart_files_keep_their_type_and_fields_have_none() -> None:
    request = httpx.Request(
        "POST",
        "http://x/",
        data={"field": "value"},
        files=[
            ("data", ("a.json", b'{"a": 1}', "application/json")),
            ("data", ("b.bin", b"\x00\x01", "application/octet-stream")),
        ],
    )
    body = request.read()
    params = parse_inputs(request.headers["content-type"].encode(), body)
    assert params == (
        InputParameter("field", b"value", None),
        InputParameter("data", b'{"a": 1}', "application/json"),
        InputParameter("data", b"\x00\x01", "application/octet-stream"),
    )


def test_multipart_file_without_type_is_octet_stream() -> None:
    body = b'--B\r\nContent-Disposition: form-data; name="f"; filename="x"\r\n\r\nabc\r\n--B--\r\n'
    assert parse_inputs(b"multipart/form-data; boundary=B", body) == (
        InputParameter("f", b"abc", "application/octet-stream"),
    )


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (b"multipart/form-data", b"--B\r\n"),
        (b"multipart/form-data; boundary=B", b"garbage"),
        (
            b"multipart/form-data; boundary=B",
            b"--B\r\nContent-Type: text/plain\r\n\r\nx\r\n--B--\r\n",
        ),
    ],
)
def test_malformed_multipart_is_a_bad_request(content_type: bytes, body: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_inputs(content_type, body)


def test_form_values_are_utf8_by_default_and_ascii_when_configured() -> None:
    urlencoded = b"application/x-www-form-urlencoded"
    multipart = b"multipart/form-data; boundary=b"
    form = b'--b\r\ncontent-disposition: form-data; name="data"\r\n\r\nh\xc3\xa9\r\n--b--\r\n'
    assert parse_inputs(urlencoded, b"data=h%C3%A9")[0].value == "hé".encode()
    assert parse_inputs(multipart, form)[0].value == "hé".encode()
    for content_type, body in ((urlencoded, b"data=h%C3%A9"), (multipart, form)):
        with pytest.raises(BadRequest, match=r"'data' is not ASCII text \(form_value_charset"):
            parse_inputs(content_type, body, ascii_only=True)
    assert parse_inputs(urlencoded, b"data=plain", ascii_only=True)[0].value == b"plain"
    # File parts carry bytes: never checked.
    upload = (
        b'--b\r\ncontent-disposition: form-data; name="f"; filename="x.bin"\r\n\r\n'
        b"\xff\x00\r\n--b--\r\n"
    )
    assert parse_inputs(multipart, upload, ascii_only=True)[0].value == b"\xff\x00"
