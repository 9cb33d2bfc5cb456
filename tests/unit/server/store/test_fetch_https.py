"""The bounded fetcher over HTTPS: certificates are verified, and a trusted origin works."""

from __future__ import annotations

import http.server
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from torchwick.server.store import FetchError, HttpFetcher, UrlPolicy

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"archive bytes"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def https_origin(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}", cert
    server.shutdown()
    server.server_close()


def test_an_untrusted_certificate_is_refused(
    https_origin: tuple[str, Path], tmp_path: Path
) -> None:
    base, _ = https_origin
    fetch = HttpFetcher(UrlPolicy((".*",)), read_timeout_s=10, deadline_s=30)
    with (tmp_path / "out").open("wb") as out, pytest.raises(FetchError, match="cannot connect"):
        fetch(f"{base}/m.mar", out, 1000)


def test_a_trusted_origin_is_fetched(
    https_origin: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, cert = https_origin
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    fetch = HttpFetcher(UrlPolicy((".*",)), read_timeout_s=10, deadline_s=30)
    with (tmp_path / "out").open("wb") as out:
        fetch(f"{base}/m.mar", out, 1000)
    assert (tmp_path / "out").read_bytes() == b"archive bytes"
