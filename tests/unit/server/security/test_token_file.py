"""Preset keys from ``token_file`` (a mounted secret): read, never expiring, bad files refused."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from torchwick.server.config import CliOptions, ConfigError, load_settings
from torchwick.server.errors import InvalidToken
from torchwick.server.security import TokenAuthority, read_key_file
from torchwick.server.settings import Settings

INFERENCE = "inference-key-0123456789abcdef"
MANAGEMENT = "management-key-0123456789abcdef"
DAY_S = 24 * 3600.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def write_tokens(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def settings_with(tmp_path: Path, token_file: Path) -> Settings:
    return Settings(
        key_file=tmp_path / "key_file.json", token_file=token_file, token_expiration_min=1
    )


def test_preset_keys_are_used_and_never_expire(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token_file = write_tokens(
        tmp_path / "tokens.json", {"inference": INFERENCE, "management": MANAGEMENT}
    )
    clock = Clock()
    settings = settings_with(tmp_path, token_file)
    with caplog.at_level(logging.INFO, logger="torchwick.security"):
        authority = TokenAuthority.create(settings, clock)
    assert authority is not None
    assert str(settings.key_file) in caplog.text
    assert str(token_file) in caplog.text
    clock.now += 30 * DAY_S
    authority.check("inference", f"Bearer {INFERENCE}")
    authority.check("management", f"Bearer {MANAGEMENT}")
    with pytest.raises(InvalidToken):
        authority.check("inference", f"Bearer {MANAGEMENT}")
    written = read_key_file(settings.key_file)
    assert written.inference.key == INFERENCE
    assert written.inference.expiration_time == "never"
    # No api key in the file: a random one guards the token API.
    assert written.api.key not in {INFERENCE, MANAGEMENT}
    authority.check_api_key(f"Bearer {written.api.key}")
    authority.close()


def test_rotation_replaces_a_preset_key_with_an_expiring_one(tmp_path: Path) -> None:
    token_file = write_tokens(
        tmp_path / "tokens.json",
        {"inference": INFERENCE, "management": MANAGEMENT, "api": "api-key-0123456789abcdef"},
    )
    clock = Clock()
    authority = TokenAuthority.create(settings_with(tmp_path, token_file), clock)
    assert authority is not None
    authority.check_api_key("Bearer api-key-0123456789abcdef")
    authority.rotate("inference")
    fresh = authority.key("inference")
    assert fresh != INFERENCE
    with pytest.raises(InvalidToken):
        authority.check("inference", f"Bearer {INFERENCE}")
    clock.now += 61
    with pytest.raises(InvalidToken):
        authority.check("inference", f"Bearer {fresh}")
    authority.close()


@pytest.mark.parametrize(
    ("document", "named"),
    [
        ({"inference": INFERENCE}, "management"),
        ({"inference": INFERENCE, "management": MANAGEMENT, "extra": "x"}, "extra"),
        ({"inference": "short", "management": MANAGEMENT}, "inference"),
        ({"inference": INFERENCE, "management": "has spaces in it 0123456789"}, "management"),
        (["not", "an", "object"], "(document)"),
    ],
)
def test_bad_token_file_is_a_config_error_naming_the_field(
    tmp_path: Path, document: object, named: str
) -> None:
    token_file = write_tokens(tmp_path / "tokens.json", document)
    with pytest.raises(ConfigError, match="token_file") as caught:
        TokenAuthority.create(settings_with(tmp_path, token_file))
    assert named in str(caught.value)
    # The message never echoes a key.
    assert INFERENCE not in str(caught.value)
    assert not (tmp_path / "key_file.json").exists()


def test_token_file_comes_from_the_environment_and_must_exist(tmp_path: Path) -> None:
    token_file = write_tokens(
        tmp_path / "tokens.json", {"inference": INFERENCE, "management": MANAGEMENT}
    )
    environ = {"TORCHWICK_TOKEN_FILE": str(token_file)}
    settings = load_settings(CliOptions(), environ, tmp_path)
    assert settings.token_file == token_file
    with pytest.raises(ConfigError, match="token_file"):
        load_settings(CliOptions(), {"TORCHWICK_TOKEN_FILE": "missing.json"}, tmp_path)
