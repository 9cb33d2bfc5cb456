"""The server's log file, ``<log_location>/torchwick_log.log``, next to the console log.

Process-wide logging is set up by the command line (``torchwick.server.config.
configure_logging``: stderr, or the user's ``--log-config``). ``install_server_log`` adds the
server log file on top, unless the user's own log config is in charge; when nothing set up
logging (``serve`` called directly, e.g. from an embedding program), it also logs to stdout.
uvicorn's loggers are made to propagate so that its messages land in the same places.
With ``log_format=json`` both get one JSON object per line (``JsonFormatter``: ``time``,
``level``, ``logger``, ``message`` and, for exceptions, ``exception``).
"""

from __future__ import annotations

import json
import logging
import sys

from torchwick.server.settings import Settings

SERVER_LOG_FILE = "torchwick_log.log"
ACCESS_LOG_FILE = "access_log.log"
_FORMAT = "%(asctime)s %(levelname)s [%(name)s] %(message)s"
_OWNED_ATTRIBUTE = "_torchwick_server_log"

log = logging.getLogger(__name__)


class JsonFormatter(logging.Formatter):
    """One JSON object per record (usable from a ``log_config`` dictConfig as ``()``)."""

    def format(self, record: logging.LogRecord) -> str:
        document = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, ensure_ascii=False)


def install_server_log(settings: Settings) -> None:
    """Add the server log file handler (idempotent); never raises for an unwritable folder."""
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # uvicorn's INFO lines ("Shutting down", once per listener) repeat what the server logs.
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    root = logging.getLogger()
    if settings.log_config is not None:
        return
    for handler in list(root.handlers):
        if getattr(handler, _OWNED_ATTRIBUTE, False):
            root.removeHandler(handler)
            handler.close()
    handlers: list[logging.Handler] = []
    if not root.handlers:
        handlers.append(logging.StreamHandler(sys.stdout))
        root.setLevel(logging.INFO)
    try:
        settings.log_location.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(settings.log_location / SERVER_LOG_FILE))
    except OSError as exc:
        log.warning("cannot write %s under %s: %s", SERVER_LOG_FILE, settings.log_location, exc)
    formatter = JsonFormatter() if settings.log_format == "json" else logging.Formatter(_FORMAT)
    for handler in handlers:
        handler.setFormatter(formatter)
        setattr(handler, _OWNED_ATTRIBUTE, True)
        root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)


def remove_server_log() -> None:
    """Close and remove the handlers ``install_server_log`` added."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _OWNED_ATTRIBUTE, False):
            root.removeHandler(handler)
            handler.close()
