"""Listener address parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from torchwick.server.config import ConfigError, ListenAddress, parse_address


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://127.0.0.1:8080", ListenAddress("http", "127.0.0.1", 8080, None)),
        ("https://example.com", ListenAddress("https", "example.com", 443, None)),
        ("http://localhost", ListenAddress("http", "localhost", 80, None)),
        ("HTTPS://0.0.0.0:8443/", ListenAddress("https", "0.0.0.0", 8443, None)),
        ("http://[::1]:9000", ListenAddress("http", "::1", 9000, None)),
        ("unix:/tmp/ts.sock", ListenAddress("unix", None, None, Path("/tmp/ts.sock"))),
    ],
)
def test_valid_addresses(text: str, expected: ListenAddress) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "127.0.0.1:8080",
        "ftp://host:21",
        "http://host:port",
        "http://host:70000",
        "http://host:80/path",
        "unix:relative.sock",
        "http://user@host:80",
        "",
    ],
)
def test_invalid_addresses_name_the_key(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^inference_address: "):
        parse_address(text, key="inference_address")


def test_connect_host_maps_wildcards_to_loopback() -> None:
    assert parse_address("http://0.0.0.0:1").connect_host() == "127.0.0.1"
    assert parse_address("http://[::]:1").connect_host() == "::1"
    assert parse_address("http://10.1.2.3:1").connect_host() == "10.1.2.3"


def test_str_round_trips() -> None:
    assert str(parse_address("http://[::1]:9000")) == "http://[::1]:9000"
    assert str(parse_address("unix:/run/x.sock")) == "unix:/run/x.sock"
    assert parse_address("unix:/run/x.sock").is_unix
    assert parse_address("https://h").is_tls
