"""Process-wide logging for the server, from ``--log-config`` or a plain default.

``--log-config`` takes a Python ``logging.config.dictConfig`` document as JSON or YAML. A
TorchServe ``log4j2.xml`` is recognised and ignored with a warning (it configures Java); the
INI ``fileConfig`` format is refused because it evaluates expressions from the file.
"""

from __future__ import annotations

import json
import logging
import logging.config
import sys
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

DEFAULT_FORMAT = "%(asctime)s %(levelname)s [%(name)s] %(message)s"


def configure_logging(log_config: Path | None) -> None:
    """Set up logging once for this process.

    Without ``log_config``: INFO and above to stderr. With one: apply the dictConfig it holds.
    Raises ``ConfigError`` naming ``--log-config`` when the file cannot be read or applied.
    """
    if log_config is None or log_config.suffix.lower() == ".xml":
        logging.basicConfig(level=logging.INFO, format=DEFAULT_FORMAT, stream=sys.stderr)
        if log_config is not None:
            logging.getLogger("torchwick.config").warning(
                "--log-config %s looks like a log4j2 file (TorchServe's Java logging); "
                "torchwick ignores it and logs to stderr. Give a JSON or YAML dictConfig instead.",
                log_config,
            )
        return
    document = _read_document(log_config)
    try:
        logging.config.dictConfig(document)
    except (ValueError, TypeError, AttributeError, ImportError) as error:
        raise ConfigError(f"--log-config {log_config}: cannot be applied ({error})") from None


def _read_document(path: Path) -> dict[str, Any]:
    suffix = path.suffix.lower()
    if suffix not in {".json", ".yaml", ".yml"}:
        raise ConfigError(
            f"--log-config {path}: expected a .json, .yaml or .yml logging dictConfig file"
        )
    try:
        text = path.read_text(encoding="utf-8")
        document = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as error:
        raise ConfigError(f"--log-config {path}: cannot be read ({error})") from None
    if not isinstance(document, dict):
        raise ConfigError(f"--log-config {path}: expected a mapping at the top level")
    document.setdefault("version", 1)
    # Loggers created at import time (before this runs) must keep working.
    document.setdefault("disable_existing_loggers", False)
    return document
