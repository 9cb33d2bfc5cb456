"""The model store and archive limit keys: parsed, typed, checked, and used by the store."""

from __future__ import annotations

from pathlib import Path

import pytest

from torchwick.archiver import ArchiveLimits
from torchwick.server.config import CliOptions, ConfigError, load_settings, startup_warnings
from torchwick.server.model_store import archive_limits
from torchwick.server.settings import Settings


def _load(tmp_path: Path, *lines: str) -> Settings:
    (tmp_path / "config.properties").write_text("\n".join(lines) + "\n")
    return load_settings(CliOptions(), {}, tmp_path)


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings(CliOptions(), {}, tmp_path)
    assert settings.strict_allowed_urls is False
    assert settings.max_download_size == 20 * 1024**3
    assert (settings.download_timeout_s, settings.download_read_timeout_s) == (1800.0, 60.0)
    assert archive_limits(settings) == ArchiveLimits()
    assert settings.unknown_keys == ()


def test_values_are_read_and_reach_the_archive_limits(tmp_path: Path) -> None:
    settings = _load(
        tmp_path,
        "strict_allowed_urls=true",
        "max_download_size=1048576",
        "download_timeout_s=30",
        "download_read_timeout_s=2.5",
        "max_archive_entries=50",
        "max_archive_uncompressed_size=4096",
        "max_archive_compression_ratio=12.5",
    )
    assert settings.strict_allowed_urls is True
    assert settings.max_download_size == 1 << 20
    assert (settings.download_timeout_s, settings.download_read_timeout_s) == (30.0, 2.5)
    assert archive_limits(settings) == ArchiveLimits(50, 4096, 12.5)
    assert settings.unknown_keys == ()


def test_environment_variables_set_them_too(tmp_path: Path) -> None:
    environ = {"TORCHWICK_MAX_ARCHIVE_COMPRESSION_RATIO": "7"}
    assert load_settings(CliOptions(), environ, tmp_path).max_archive_compression_ratio == 7.0


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("max_download_size=0", "at least 1"),
        ("max_download_size=10GB", "integer"),
        ("download_timeout_s=-1", "positive"),
        ("download_read_timeout_s=inf", "positive"),
        ("max_archive_entries=0", "at least 1"),
        ("max_archive_compression_ratio=0.5", "at least 1"),
        ("strict_allowed_urls=maybe", "true or false"),
    ],
)
def test_bad_values_are_refused_at_start(tmp_path: Path, line: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        _load(tmp_path, line)


def test_strict_mode_silences_the_permissive_allowlist_warning(tmp_path: Path) -> None:
    loose = load_settings(CliOptions(), {}, tmp_path)
    assert any("allowed_urls" in warning for warning in startup_warnings(loose))
    strict = _load(tmp_path, "strict_allowed_urls=true")
    assert not any("allowed_urls" in warning for warning in startup_warnings(strict))
