"""A self-signed key and certificate for 127.0.0.1, made in the test (no file is shipped)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """``(key.pem, cert.pem)`` in ``directory``, valid one day for 127.0.0.1 (needs openssl)."""
    assert shutil.which("openssl") is not None, "making a test certificate needs openssl"
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return key, cert
