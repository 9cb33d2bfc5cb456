"""``torchwick bench`` against an https endpoint: ``--cacert``, and a certificate it does not
trust refused before any load (exit status 4).

The endpoint is a minimal HTTP/1.1 server on a real TLS socket in a thread of the test,
answering ``200 {}`` on keep-alive connections, with a certificate made in the test.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.certs import make_certificate

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
TORCHWICK = str(Path(sys.executable).parent / "torchwick")
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            await reader.readuntil(b"\r\n\r\n")  # GET requests: no body
            writer.write(RESPONSE)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


@pytest.fixture
def tls_endpoint(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """(port, cert.pem) of an https endpoint on 127.0.0.1."""
    key, cert = make_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(asyncio.start_server(_answer, "127.0.0.1", 0, ssl=context))
    port = int(server.sockets[0].getsockname()[1])
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield port, cert
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()


def _bench(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TORCHWICK, "bench", *argv, "--warmup", "0.1", "--duration", "0.3", "--progress", "never"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_https_with_cacert(tls_endpoint: tuple[int, Path]) -> None:
    port, cert = tls_endpoint
    result = _bench(f"https://127.0.0.1:{port}/ping", "--cacert", str(cert), "--concurrency", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("A c=2 #1:"))
    assert "errors 0" in line and " 0 req/s" not in line


def test_an_untrusted_certificate_is_refused_before_the_load(
    tls_endpoint: tuple[int, Path],
) -> None:
    port, _cert = tls_endpoint
    result = _bench(f"https://127.0.0.1:{port}/ping", "--concurrency", "1")
    assert result.returncode == 4
    assert "CERTIFICATE_VERIFY_FAILED" in result.stderr
    assert "#1:" not in result.stdout
