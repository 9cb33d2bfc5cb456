"""Bearer-token authorization for the inference and management APIs (on by default).

At start the server creates three random keys and writes them to ``key_file.json`` in its
working directory, with mode 0600 from creation on, in TorchServe's shape::

    {"management": {"key": "...", "expiration time": "2025-01-01T12:00:00.000000Z"},
     "inference":  {"key": "...", "expiration time": "2025-01-01T12:00:00.000000Z"},
     "API":        {"key": "..."}}

Requests carry ``Authorization: Bearer <key>``. The inference key guards the inference API,
the management key the management API, and the API key (which never expires) guards the token
API, ``GET /token?type=inference|management``, which replaces one key and rewrites the file.
The metrics API is never guarded.

A missing, malformed, wrong or expired token raises ``InvalidToken``, which answers **401**.
TorchServe answers 400 here; 401 is torchwick's one deliberate difference, because it is the
status HTTP clients and proxies understand as "credentials needed".

Keys are 192-bit ``secrets.token_urlsafe`` strings (TorchServe's are 48-bit) and are compared
with ``hmac.compare_digest``. Time comes from an injected clock (epoch seconds).

With ``token_file`` set (torchwick only; for a mounted container or Kubernetes secret) the keys
are read from that JSON file instead, ``{"inference": "...", "management": "...", "api": "..."}``
(``api`` optional: a random one is made when it is absent). Preset keys never expire (the key
file says ``"expiration time": "never"``); rotating one through the token API replaces it with
a random, expiring key in this server only.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..config.errors import ConfigError
from ..errors import BadRequest, InvalidToken
from ..settings import Settings
from .files import write_private_file

TokenKind = Literal["inference", "management"]
Clock = Callable[[], float]

TOKEN_KINDS: tuple[TokenKind, ...] = ("inference", "management")
KEY_BYTES = 24
FAILURE_MESSAGE = "Token authorization failed: the bearer token is missing, wrong or expired."
_BEARER = re.compile(r"Bearer\s+(\S+)", re.IGNORECASE)
#: A preset key: 16 to 512 characters of RFC 6750's token68 alphabet (a valid bearer token).
_PRESET_KEY = re.compile(r"[A-Za-z0-9._~+/-]{16,512}=*")
NEVER = "never"
log = logging.getLogger("torchwick.security")


class _ExpiringKey(BaseModel):
    model_config = ConfigDict(populate_by_name=True, frozen=True)

    key: str
    expiration_time: str = Field(alias="expiration time")


class _ApiKey(BaseModel):
    model_config = ConfigDict(frozen=True)

    key: str


class _PresetKeys(BaseModel):
    """The document of ``token_file``: preset keys, checked for shape only."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    inference: str
    management: str
    api: str | None = None


class KeyFile(BaseModel):
    """The JSON document of ``key_file.json`` (TorchServe's field names)."""

    model_config = ConfigDict(populate_by_name=True, frozen=True)

    management: _ExpiringKey
    inference: _ExpiringKey
    api: _ApiKey = Field(alias="API")


@dataclass(frozen=True, slots=True)
class _Token:
    key: str
    expires_at: float | None

    def matches(self, presented: str) -> bool:
        return hmac.compare_digest(
            presented.encode("utf-8", "surrogatepass"), self.key.encode("utf-8")
        )


@dataclass(frozen=True, slots=True)
class _Keys:
    inference: _Token
    management: _Token
    api: _Token


def read_key_file(path: Path) -> KeyFile:
    """Read and validate a key file (for tools and tests).

    Raises ``OSError`` when it cannot be read and ``pydantic.ValidationError`` when malformed.
    """
    return KeyFile.model_validate_json(path.read_bytes())


def bearer_token(header: str | None) -> str | None:
    """The token in an ``Authorization: Bearer <token>`` header value, or None."""
    if header is None:
        return None
    match = _BEARER.fullmatch(header.strip())
    return match.group(1) if match else None


class TokenAuthority:
    """Holds the current keys, checks presented tokens and rotates keys.

    Safe to share between threads and coroutines: checks read one immutable snapshot of the
    keys; rotation swaps in a new snapshot under a lock after the file is rewritten.
    """

    def __init__(self, key_file: Path, expiration_min: float, clock: Clock) -> None:
        """Generate fresh keys for ``key_file`` without writing it (``create`` writes)."""
        self._key_file = key_file
        self._lifetime_s = expiration_min * 60.0
        self._clock = clock
        self._lock = threading.Lock()
        self._keys = _Keys(self._new_token(), self._new_token(), _Token(_new_key(), None))

    @classmethod
    def create(cls, settings: Settings, clock: Clock = time.time) -> TokenAuthority | None:
        """Start token authorization for a server, or return None when it is disabled.

        Writes ``settings.key_file`` (mode 0600). Raises ``OSError`` when it cannot be written.
        """
        if settings.disable_token_authorization:
            return None
        authority = cls(settings.key_file, settings.token_expiration_min, clock)
        source = "generated"
        if settings.token_file is not None:
            authority._keys = read_token_file(settings.token_file)
            source = f"inference and management keys from token_file {settings.token_file}"
        authority._write(authority._keys)
        log.info(
            "token authorization is on (%s); keys written to %s (mode 0600)",
            source,
            settings.key_file,
        )
        return authority

    @property
    def key_file(self) -> Path:
        """Where the keys are written."""
        return self._key_file

    def check(self, kind: TokenKind, header: str | None) -> None:
        """Accept the ``Authorization`` header for the ``kind`` API or raise ``InvalidToken``.

        ``kind`` other than ``inference``/``management`` is a programming error (``ValueError``).
        """
        keys = self._keys
        if kind == "inference":
            self._verify(keys.inference, header)
        elif kind == "management":
            self._verify(keys.management, header)
        else:
            raise ValueError(f"unknown token kind {kind!r}")

    def check_api_key(self, header: str | None) -> None:
        """Accept the ``Authorization`` header for the token API or raise ``InvalidToken``."""
        self._verify(self._keys.api, header)

    def rotate(self, kind: str) -> None:
        """Replace the ``kind`` key (``inference`` or ``management``) and rewrite the key file.

        The caller has already checked the API key. Raises ``BadRequest`` for another ``kind``
        and ``OSError`` when the file cannot be written (the old key then stays valid).
        """
        if kind not in TOKEN_KINDS:
            raise BadRequest(f"Unknown token type {kind!r}; expected inference or management.")
        with self._lock:
            current = self._keys
            fresh = self._new_token()
            if kind == "inference":
                keys = _Keys(fresh, current.management, current.api)
            else:
                keys = _Keys(current.inference, fresh, current.api)
            self._write(keys)
            self._keys = keys

    def key(self, kind: Literal["inference", "management", "api"]) -> str:
        """The current key of ``kind`` (for in-process clients and tests)."""
        return str(getattr(self._keys, kind).key)

    def close(self) -> None:
        """Delete the key file; call on clean shutdown. Never raises for a missing file."""
        self._key_file.unlink(missing_ok=True)

    def _verify(self, token: _Token, header: str | None) -> None:
        presented = bearer_token(header)
        if presented is None or not token.matches(presented):
            raise InvalidToken(FAILURE_MESSAGE)
        if token.expires_at is not None and self._clock() >= token.expires_at:
            raise InvalidToken(FAILURE_MESSAGE)

    def _new_token(self) -> _Token:
        return _Token(_new_key(), self._clock() + self._lifetime_s)

    def _write(self, keys: _Keys) -> None:
        document = KeyFile(
            management=_ExpiringKey(
                key=keys.management.key, expiration_time=_timestamp(keys.management.expires_at)
            ),
            inference=_ExpiringKey(
                key=keys.inference.key, expiration_time=_timestamp(keys.inference.expires_at)
            ),
            api=_ApiKey(key=keys.api.key),
        )
        text = document.model_dump_json(by_alias=True, indent=2) + "\n"
        write_private_file(self._key_file, text.encode("utf-8"))


def read_token_file(path: Path) -> _Keys:
    """Read preset keys from ``path`` (see the module docs); they never expire.

    Raises ``ConfigError`` naming the file and the field (never the key itself) when the file
    cannot be read, is not the expected JSON object, or holds a key that is not 16 to 512
    characters of ``A-Z a-z 0-9 - . _ ~ + /`` (optionally ``=``-padded).
    """
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"token_file: {path} cannot be read ({error.strerror})") from None
    try:
        preset = _PresetKeys.model_validate_json(raw)
    except ValidationError as error:
        fields = ", ".join(
            f"{'.'.join(str(part) for part in item['loc']) or '(document)'}: {item['msg']}"
            for item in error.errors(include_input=False)
        )
        raise ConfigError(f"token_file: {path} is not valid ({fields})") from None
    for name in ("inference", "management", "api"):
        value = getattr(preset, name)
        if value is not None and not _PRESET_KEY.fullmatch(value):
            raise ConfigError(
                f"token_file: {path}: {name}: a key must be 16 to 512 characters of "
                "A-Z a-z 0-9 - . _ ~ + / (optionally = padded)"
            )
    api = preset.api if preset.api is not None else _new_key()
    return _Keys(_Token(preset.inference, None), _Token(preset.management, None), _Token(api, None))


def _new_key() -> str:
    return secrets.token_urlsafe(KEY_BYTES)


def _timestamp(epoch_s: float | None) -> str:
    if epoch_s is None:
        return NEVER
    moment = datetime.fromtimestamp(epoch_s, tz=UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
