"""What ``torchwick bench`` may load: a URL, resolved and checked against the target policy.

A benchmark is a load generator; pointed at someone else's server it is an attack. So a target
must resolve only to loopback addresses (127.0.0.0/8, ::1) unless the user allowed more:
``--allow-remote`` (any address) or ``--allow-host`` entries (a host name as written in the
URL, an IP address, or a network such as ``10.0.0.0/8``). Every address the name resolves to
must pass, and the load connects to the checked address, not to a second resolution of the name.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


class TargetError(Exception):
    """A target URL that cannot be used (malformed, unsupported scheme, does not resolve)."""


class TargetRefused(TargetError):
    """A target that resolves outside loopback and was not allowed."""


@dataclass(frozen=True)
class Target:
    """A checked target: where to connect and what to send in the request line and ``Host``."""

    url: str
    scheme: str
    host: str
    port: int
    #: Path and query as sent in the request line.
    path: str
    #: The checked IP address the load connects to.
    address: str

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if DEFAULT_PORTS[self.scheme] == self.port else f"{host}:{self.port}"


@dataclass(frozen=True)
class TargetPolicy:
    """Which non-loopback targets are allowed (none by default)."""

    allow_remote: bool = False
    #: Host names (compared case-insensitively with the URL's host) and IP networks.
    allow_hosts: tuple[str, ...] = ()

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        out: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in self.allow_hosts:
            try:
                out.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                continue  # a host name, matched by name
        return out

    def names(self) -> frozenset[str]:
        return frozenset(entry.lower() for entry in self.allow_hosts)


def split_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path-and-query) of an ``http(s)://host[:port]/path`` URL.

    Raises :class:`TargetError` naming what is wrong.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise TargetError(f"invalid URL {url!r}: {e}") from e
    if parts.scheme not in DEFAULT_PORTS:
        raise TargetError(f"invalid URL {url!r}: the scheme must be http or https")
    if not parts.hostname:
        raise TargetError(f"invalid URL {url!r}: no host")
    if parts.username is not None or parts.password is not None:
        raise TargetError(f"invalid URL {url!r}: pass credentials with --token or --header")
    if parts.fragment:
        raise TargetError(f"invalid URL {url!r}: a fragment is never sent")
    path = parts.path or "/"
    if any(c in path + parts.query for c in " \r\n\t"):
        raise TargetError(f"invalid URL {url!r}: whitespace in the path (percent-encode it)")
    if parts.query:
        path = f"{path}?{parts.query}"
    return parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme], path


def resolve(host: str, port: int) -> list[str]:
    """The IP addresses ``host`` resolves to (an IP literal resolves to itself)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise TargetError(f"cannot resolve {host!r}: {e.strerror}") from e
    addresses: list[str] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise TargetError(f"cannot resolve {host!r}: no address")
    return addresses


def is_allowed(
    host: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address, policy: TargetPolicy
) -> bool:
    """Whether a connection to ``address`` (``host`` as written in the URL) is allowed."""
    if address.is_loopback or policy.allow_remote or host.lower() in policy.names():
        return True
    return any(address in network for network in policy.networks())


def check_target(
    url: str,
    policy: TargetPolicy,
    resolver: Callable[[str, int], Sequence[str]] = resolve,
) -> Target:
    """Parse ``url``, resolve its host and check every address against ``policy``.

    ``resolver`` (``(host, port) -> addresses``) replaces DNS in tests. Raises
    :class:`TargetError` for a bad or unresolvable URL and :class:`TargetRefused` for a target
    outside the policy.
    """
    scheme, host, port, path = split_url(url)
    addresses = resolver(host, port)
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        if not is_allowed(host, address, policy):
            raise TargetRefused(
                f"refusing to load {url}: {host} resolves to {text}, which is not a loopback "
                "address; pass --allow-host HOST (a name, address or network) or "
                "--allow-remote to benchmark a server you are entitled to load"
            )
    return Target(url, scheme, host, port, path, addresses[0])
