"""Process-wide logging for the server, from ``--log-config`` or a plain default.

``--log-config`` takes a Python ``logging.config.dictConfig`` document as JSON or YAML. A
TorchServe ``log4j2.xml`` is recognised and ignored with a warning (it configures Java); the
INI ``fileConfig`` format is refused because it evaluates expressions from the file.
"""

from __future__ import annotations

import json
import logging
import logging.config
import re
import sys
from pathlib import Path
from typing import Any

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
        where = _where(log_config, str(error))
        raise ConfigError(f"--log-config {where}: cannot be applied ({error})") from None


def _where(path: Path, message: str) -> str:
    """``path (line N)`` for the first line of the file naming what dictConfig quoted in its
    error (``Unable to configure handler 'console'``); just ``path`` when none does."""
    names = re.findall(r"'([^']+)'", message)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return str(path)
    for name in names:
        pattern = re.compile(rf"""(^|[\s{{,])["']?{re.escape(name)}["']?\s*:""")
        for number, line in enumerate(lines, start=1):
            if pattern.search(line):
                return f"{path} (line {number})"
    return str(path)


def _read_document(path: Path) -> dict[str, Any]:
    suffix = path.suffix.lower()
    if suffix not in {".json", ".yaml", ".yml"}:
        raise ConfigError(
            f"--log-config {path}: expected a .json, .yaml or .yml logging dictConfig file"
        )
    # Imported here: every server configures logging, few from a YAML file (start-up time).
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
        document = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"--log-config {path} (line {error.lineno}): not valid JSON: {error.msg}"
        ) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"--log-config {path}{line}: not valid YAML: {problem}") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ConfigError(f"--log-config {path}: cannot be read ({error})") from None
    if not isinstance(document, dict):
        raise ConfigError(f"--log-config {path}: expected a mapping at the top level")
    document.setdefault("version", 1)
    # Loggers created at import time (before this runs) must keep working.
    document.setdefault("disable_existing_loggers", False)
    return document
