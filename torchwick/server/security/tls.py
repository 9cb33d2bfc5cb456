"""The server's TLS key and certificate: PEM files or a PKCS12 keystore, as TorchServe reads them.

TorchServe's order (``ConfigManager.getSslContext``): ``keystore`` when set (with
``keystore_pass``, default ``changeit``, and ``keystore_type``, default ``PKCS12``), else
``private_key_file`` with ``certificate_file``. torchwick reads the same keys in the same order.
A PKCS12 keystore is decrypted in memory with ``cryptography``; only the first key entry and
its certificate chain are used. Java's ``JKS`` keystores are refused with a message saying how
to convert one (``keytool -importkeystore -deststoretype PKCS12``).

``load_tls_material`` returns the PEM bytes (gRPC takes them directly). uvicorn only takes file
names, so ``pem_files`` writes converted material to a private (0700) temporary directory, with
0600 files, for the moment uvicorn reads them, and removes it right after.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..config.errors import ConfigError
from ..settings import Settings
from .files import write_private_file

#: TorchServe's defaults for ``keystore_pass`` and ``keystore_type``.
DEFAULT_KEYSTORE_PASS = "changeit"
DEFAULT_KEYSTORE_TYPE = "PKCS12"


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    """An unencrypted PEM private key and its PEM certificate chain (leaf first).

    ``key_file``/``cert_file`` are set when the material came from PEM files (uvicorn can then
    read them in place).
    """

    key_pem: bytes
    cert_pem: bytes
    key_file: Path | None = None
    cert_file: Path | None = None


def tls_configured(settings: Settings) -> bool:
    """True when the settings name a keystore or a PEM key and certificate."""
    return settings.keystore is not None or (
        settings.private_key_file is not None and settings.certificate_file is not None
    )


def load_tls_material(settings: Settings) -> TlsMaterial | None:
    """The key and certificate the settings name, or None when none is configured.

    Raises ``ConfigError`` naming the key for an unreadable file, an unsupported keystore
    type, a wrong ``keystore_pass`` or a keystore without a key entry.
    """
    if settings.keystore is not None:
        return _from_keystore(
            settings.keystore,
            settings.keystore_pass or DEFAULT_KEYSTORE_PASS,
            settings.keystore_type or DEFAULT_KEYSTORE_TYPE,
        )
    key, cert = settings.private_key_file, settings.certificate_file
    if key is None or cert is None:
        return None
    try:
        return TlsMaterial(key.read_bytes(), cert.read_bytes(), key, cert)
    except OSError as error:
        raise ConfigError(f"private_key_file/certificate_file: cannot be read ({error})") from None


def _from_keystore(path: Path, password: str, kind: str) -> TlsMaterial:
    if kind.upper() not in {"PKCS12", "PFX"}:
        raise ConfigError(
            f"keystore_type: {kind!r} is not supported; convert the keystore to PKCS12 "
            "(keytool -importkeystore -deststoretype PKCS12) or use private_key_file and "
            "certificate_file"
        )
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        pkcs12,
    )

    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"keystore: {path} cannot be read ({error})") from None
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, password.encode("utf-8"))
    except ValueError:
        raise ConfigError(
            f"keystore: {path} is not a PKCS12 keystore or keystore_pass is wrong"
        ) from None
    if key is None or cert is None:
        raise ConfigError(f"keystore: {path} holds no private key with a certificate")
    key_pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    chain = [cert, *(extra or [])]
    cert_pem = b"".join(c.public_bytes(Encoding.PEM) for c in chain)
    return TlsMaterial(key_pem, cert_pem)


@contextlib.contextmanager
def pem_files(material: TlsMaterial) -> Iterator[tuple[str, str]]:
    """``(key_file, cert_file)`` names uvicorn can read, valid inside the ``with`` block.

    PEM files are used in place; converted keystore material is written to a fresh private
    temporary directory that is removed when the block ends (also on error).
    """
    if material.key_file is not None and material.cert_file is not None:
        yield str(material.key_file), str(material.cert_file)
        return
    directory = Path(tempfile.mkdtemp(prefix="torchwick-tls-"))  # mode 0700
    try:
        key_file, cert_file = directory / "key.pem", directory / "cert.pem"
        write_private_file(key_file, material.key_pem)
        write_private_file(cert_file, material.cert_pem)
        yield str(key_file), str(cert_file)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
