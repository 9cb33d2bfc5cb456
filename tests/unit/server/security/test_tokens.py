"""Token authorization: the key file, checks, expiry and rotation."""

from __future__ import annotations

import hmac
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from torchwick.server.errors import BadRequest, InvalidToken
from torchwick.server.security import TokenAuthority, read_key_file, write_private_file
from torchwick.server.settings import Settings

START = 1_700_000_000.0


class FakeClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(key_file=tmp_path / "key_file.json", token_expiration_min=0.5)


@pytest.fixture
def authority(settings: Settings, clock: FakeClock) -> Iterator[TokenAuthority]:
    created = TokenAuthority.create(settings, clock)
    assert created is not None
    yield created
    created.close()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def bearer(key: str) -> str:
    return f"Bearer {key}"


def test_disabled_means_no_authority_and_no_file(tmp_path: Path) -> None:
    settings = Settings(key_file=tmp_path / "key_file.json", disable_token_authorization=True)
    assert TokenAuthority.create(settings) is None
    assert not settings.key_file.exists()


def test_key_file_shape_and_mode(authority: TokenAuthority, settings: Settings) -> None:
    assert mode(settings.key_file) == 0o600
    document: dict[str, Any] = json.loads(settings.key_file.read_text())
    assert set(document) == {"management", "inference", "API"}
    assert set(document["API"]) == {"key"}
    for kind in ("management", "inference"):
        assert set(document[kind]) == {"key", "expiration time"}
        assert document[kind]["expiration time"] == "2023-11-14T22:13:50.000000Z"
    keys = {document[kind]["key"] for kind in ("management", "inference")}
    keys.add(document["API"]["key"])
    assert len(keys) == 3
    assert all(len(key) >= 32 for key in keys)  # 24 random bytes, base64url
    parsed = read_key_file(settings.key_file)
    assert parsed.inference.key == authority.key("inference")
    assert parsed.api.key == authority.key("api")


def test_key_file_is_private_from_creation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "key_file.json"
    target.write_text("old")
    target.chmod(0o644)
    modes: list[int] = []
    real_open = os.open

    def spy_open(path: Any, flags: int, mode: int = 0o777, **kwargs: Any) -> int:
        modes.append(mode)
        assert flags & os.O_CREAT and flags & os.O_EXCL
        return real_open(path, flags, mode, **kwargs)

    def no_chmod(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("permissions must be right at creation, not fixed afterwards")

    monkeypatch.setattr(os, "open", spy_open)
    monkeypatch.setattr(os, "chmod", no_chmod)
    old_umask = os.umask(0)
    try:
        TokenAuthority.create(Settings(key_file=target))
    finally:
        os.umask(old_umask)
    assert modes == [0o600]
    assert mode(target) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["key_file.json"]


def test_write_private_file_leaves_nothing_on_failure(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        write_private_file(tmp_path / "missing" / "f", b"x")
    assert list(tmp_path.iterdir()) == []


def test_check_accepts_the_right_key(authority: TokenAuthority) -> None:
    authority.check("inference", bearer(authority.key("inference")))
    authority.check("management", f"bearer   {authority.key('management')}  ")
    authority.check_api_key(bearer(authority.key("api")))


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", "Basic abc", "Bearer a b", "Token x", "Bearer wrong"],
)
def test_check_rejects_malformed_or_wrong(authority: TokenAuthority, header: str | None) -> None:
    with pytest.raises(InvalidToken) as caught:
        authority.check("inference", header)
    assert caught.value.status.http_status == 401


def test_keys_are_not_interchangeable(authority: TokenAuthority) -> None:
    with pytest.raises(InvalidToken):
        authority.check("inference", bearer(authority.key("management")))
    with pytest.raises(InvalidToken):
        authority.check("management", bearer(authority.key("inference")))
    with pytest.raises(InvalidToken):
        authority.check("inference", bearer(authority.key("api")))
    with pytest.raises(InvalidToken):
        authority.check_api_key(bearer(authority.key("management")))


def test_non_ascii_token_is_rejected_not_crashing(authority: TokenAuthority) -> None:
    with pytest.raises(InvalidToken):
        authority.check("inference", "Bearer caf\u00e9\ud800")


def test_comparison_is_constant_time(
    authority: TokenAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return bool(real(a, b))

    monkeypatch.setattr(hmac, "compare_digest", spy)
    authority.check("inference", bearer(authority.key("inference")))
    with pytest.raises(InvalidToken):
        authority.check("inference", "Bearer nope")
    assert len(calls) == 2


def test_tokens_expire(authority: TokenAuthority, clock: FakeClock) -> None:
    header = bearer(authority.key("inference"))
    clock.now = START + 29.9
    authority.check("inference", header)
    clock.now = START + 30.0
    with pytest.raises(InvalidToken):
        authority.check("inference", header)
    clock.now = START + 10_000_000
    authority.check_api_key(bearer(authority.key("api")))


def test_rotation_replaces_one_key(
    authority: TokenAuthority, settings: Settings, clock: FakeClock
) -> None:
    old_inference = authority.key("inference")
    old_management = authority.key("management")
    clock.now = START + 100
    authority.rotate("inference")
    new_inference = authority.key("inference")
    assert new_inference != old_inference
    assert authority.key("management") == old_management
    with pytest.raises(InvalidToken):
        authority.check("inference", bearer(old_inference))
    authority.check("inference", bearer(new_inference))
    document = read_key_file(settings.key_file)
    assert document.inference.key == new_inference
    assert document.inference.expiration_time == "2023-11-14T22:15:30.000000Z"
    assert document.management.key == old_management
    assert mode(settings.key_file) == 0o600
    authority.rotate("management")
    assert read_key_file(settings.key_file).management.key == authority.key("management")
    assert authority.key("management") != old_management


def test_rotation_of_unknown_kind_is_bad_request(authority: TokenAuthority) -> None:
    with pytest.raises(BadRequest):
        authority.rotate("api")


def test_close_deletes_the_key_file(settings: Settings, clock: FakeClock) -> None:
    authority = TokenAuthority.create(settings, clock)
    assert authority is not None and settings.key_file.exists()
    authority.close()
    assert not settings.key_file.exists()
    authority.close()


def test_unknown_kind_is_a_programming_error(authority: TokenAuthority) -> None:
    with pytest.raises(ValueError, match="unknown token kind"):
        authority.check("metrics", bearer(authority.key("management")))  # type: ignore[arg-type]
