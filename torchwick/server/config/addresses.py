"""Listener addresses: ``http(s)://host[:port]`` or ``unix:/absolute/path``.

``parse_address`` turns an address string from the settings into a ``ListenAddress``. The
accepted forms are TorchServe's, plus a bracketed IPv6 host (``http://[::1]:8080``). Without a
port, ``http`` means 80 and ``https`` 443. A trailing ``/`` is tolerated; any other path,
query or user part is rejected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import ConfigError

Scheme = Literal["http", "https", "unix"]

_TCP_ADDRESS = re.compile(
    r"(?P<scheme>https?)://(?P<host>\[[0-9A-Fa-f:.]+\]|[^:/\[\]@?#\s]+)(?::(?P<port>\d{1,5}))?/?",
    re.IGNORECASE,
)
_UNIX_ADDRESS = re.compile(r"unix:(?P<path>/\S.*)")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_LOOPBACK_FOR_WILDCARD = {"0.0.0.0": "127.0.0.1", "::": "::1"}


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """A parsed listener address.

    For ``http``/``https``, ``host`` (IPv6 without brackets) and ``port`` are set and
    ``uds_path`` is None; for ``unix``, only ``uds_path`` is set.
    """

    scheme: Scheme
    host: str | None
    port: int | None
    uds_path: Path | None

    @property
    def is_unix(self) -> bool:
        """True for a unix-domain-socket listener."""
        return self.scheme == "unix"

    @property
    def is_tls(self) -> bool:
        """True when the listener speaks HTTPS."""
        return self.scheme == "https"

    def connect_host(self) -> str:
        """The host a local client should dial: wildcard binds map to loopback.

        Raises ``ValueError`` for a unix-socket address (it has no host).
        """
        if self.host is None:
            raise ValueError("a unix-socket address has no host")
        return _LOOPBACK_FOR_WILDCARD.get(self.host, self.host)

    def __str__(self) -> str:
        if self.uds_path is not None:
            return f"unix:{self.uds_path}"
        host = f"[{self.host}]" if self.host is not None and ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_address(url: str, *, key: str = "address") -> ListenAddress:
    """Parse ``http(s)://host[:port]`` or ``unix:/path`` into a ``ListenAddress``.

    Raises ``ConfigError`` naming ``key`` when the text matches neither form or the port is
    outside 0..65535.
    """
    text = url.strip()
    unix = _UNIX_ADDRESS.fullmatch(text)
    if unix is not None:
        return ListenAddress("unix", None, None, Path(unix.group("path")))
    tcp = _TCP_ADDRESS.fullmatch(text)
    if tcp is None:
        raise ConfigError(
            f"{key}: {url!r} is not a listener address; expected http://host[:port], "
            "https://host[:port] or unix:/absolute/path"
        )
    scheme: Scheme = "https" if tcp.group("scheme").lower() == "https" else "http"
    host = tcp.group("host").strip("[]")
    port_text = tcp.group("port")
    port = _DEFAULT_PORTS[scheme] if port_text is None else int(port_text)
    if port > 65535:
        raise ConfigError(f"{key}: port {port} in {url!r} is out of range (0..65535)")
    return ListenAddress(scheme, host, port, None)
