"""Container health check: exit 0 when the inference API answers ``GET /ping`` with 200.

The address is the one the server uses (``TORCHWICK_INFERENCE_ADDRESS``, then
``TS_INFERENCE_ADDRESS``, then the image's ``http://0.0.0.0:8080``); a wildcard host is asked
on loopback. HTTPS is checked without certificate verification: the check never leaves the
container. Unix-socket addresses are not supported (exit 1 with a message).
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request
from urllib.parse import urlsplit, urlunsplit

DEFAULT = "http://0.0.0.0:8080"
WILDCARDS = {"0.0.0.0", "::", "[::]", ""}


def ping_url(address: str) -> str:
    """The ``/ping`` URL for a listener address; raises ``ValueError`` for a unix socket."""
    if address.startswith("unix:"):
        raise ValueError(f"cannot check a unix-socket listener ({address})")
    parts = urlsplit(address)
    host = parts.hostname or ""
    netloc = parts.netloc
    if host in WILDCARDS or host == "::":
        loopback = "[::1]" if ":" in host else "127.0.0.1"
        netloc = f"{loopback}:{parts.port}" if parts.port else loopback
    return urlunsplit((parts.scheme, netloc, "/ping", "", ""))


def main() -> int:
    address = (
        os.environ.get("TORCHWICK_INFERENCE_ADDRESS")
        or os.environ.get("TS_INFERENCE_ADDRESS")
        or DEFAULT
    )
    try:
        url = ping_url(address.strip())
    except ValueError as error:
        print(f"healthcheck: {error}", file=sys.stderr)
        return 1
    context = ssl._create_unverified_context() if url.startswith("https") else None
    try:
        with urllib.request.urlopen(url, timeout=4, context=context) as response:
            healthy = response.status == 200
    except (urllib.error.URLError, OSError) as error:
        print(f"healthcheck: {url}: {error}", file=sys.stderr)
        return 1
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
