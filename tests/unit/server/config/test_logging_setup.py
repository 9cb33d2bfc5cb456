"""--log-config: dictConfig files, refused formats, and TorchServe's log4j2 file."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from torchwick.server.config import ConfigError, configure_logging

LOGGER = "torchwick.tests.logging_setup"


@pytest.fixture
def isolated_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger(LOGGER)
    yield logger
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


def test_json_dict_config_is_applied(tmp_path: Path, isolated_logger: logging.Logger) -> None:
    existing = logging.getLogger("torchwick.tests.created_before")
    target = tmp_path / "out.log"
    config = tmp_path / "log.json"
    config.write_text(
        json.dumps(
            {
                "handlers": {"file": {"class": "logging.FileHandler", "filename": str(target)}},
                "loggers": {LOGGER: {"handlers": ["file"], "level": "INFO", "propagate": False}},
            }
        )
    )
    configure_logging(config)
    isolated_logger.info("hello from the test")
    for handler in isolated_logger.handlers:
        handler.flush()
    assert "hello from the test" in target.read_text()
    assert not existing.disabled


def test_yaml_dict_config_is_applied(tmp_path: Path, isolated_logger: logging.Logger) -> None:
    config = tmp_path / "log.yaml"
    config.write_text(f"loggers:\n  {LOGGER}:\n    level: ERROR\n")
    configure_logging(config)
    assert isolated_logger.level == logging.ERROR


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("log.ini", "[loggers]\nkeys=root\n", "expected a .json, .yaml or .yml"),
        ("log.json", "{broken", r"\(line 1\): not valid JSON"),
        ("log.yaml", "version: 1\nhandlers: [\n", r"\(line 3\): not valid YAML"),
        ("log.yaml", "version: 1\nhandlers:\n  h:\n    level: NOPE\n", r"\(line 3\): cannot be"),
        ("log.yaml", "- a list\n", "expected a mapping"),
        ("log.json", '{"handlers": {"h": {"class": "no.such.Handler"}}}', "cannot be applied"),
    ],
)
def test_bad_log_configs_name_the_flag(tmp_path: Path, name: str, text: str, message: str) -> None:
    config = tmp_path / name
    config.write_text(text)
    with pytest.raises(ConfigError, match=rf"^--log-config .*{message}"):
        configure_logging(config)


def test_log4j2_xml_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "log4j2.xml"
    config.write_text("<Configuration/>")
    with caplog.at_level(logging.WARNING, logger="torchwick.config"):
        configure_logging(config)
    assert "log4j2" in caplog.text
