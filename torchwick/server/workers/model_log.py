"""The model log: worker stdout/stderr (and so the worker's ``torchwick.model`` logger) captured
by the frontend and written, one line at a time, to ``<log_location>/model_log.log``.

Every line is prefixed with the worker's name (``W-9000-<model>_<version>``) and the stream.
Lines go to the ``torchwick.model_log`` logger. When nothing has configured that logger
(no handlers), the supervisor attaches a file handler itself, so the model log exists by
default; a composition root or log config that adds its own handlers takes precedence. The
logger propagates, so the lines also reach the console and the server log (TorchServe's
``MODEL_LOG`` lines appear on its console and in ``ts_log.log`` too).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

MODEL_LOGGER = "torchwick.model_log"
#: A line longer than this is split; a handler printing megabytes without newlines must not
#: make the frontend buffer them.
MAX_LINE = 64 * 1024


class StreamLabel:
    """A pump prefix, ``<name>-<stream>``, that follows its worker's current name: a warm
    spare's lines carry the name of the model that took it from then on."""

    __slots__ = ("_name", "_stream")

    def __init__(self, name: Callable[[], str], stream: str) -> None:
        self._name = name
        self._stream = stream

    def __str__(self) -> str:
        return f"{self._name()}-{self._stream}"


class ModelLog:
    """Owns the model log's file handler (if it created one) and pumps worker pipes into it."""

    def __init__(self, log_location: Path) -> None:
        self.logger = logging.getLogger(MODEL_LOGGER)
        self._handler: logging.Handler | None = None
        self._propagate = self.logger.propagate
        if not self.logger.handlers:
            log_location.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(log_location / "model_log.log", encoding="utf-8")
            handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(message)s"))
            self.logger.addHandler(handler)
            self.logger.setLevel(logging.INFO)
            # Lines also propagate to the root logger (the console and the server log), as
            # TorchServe's MODEL_LOG does: tools reading ``torchserve --start``'s output see a
            # handler's prints and tracebacks.
            self._handler = handler

    async def pump(self, stream: asyncio.StreamReader, prefix: object) -> None:
        """Log every line of ``stream`` as ``<prefix> <line>`` until end of file; ``prefix``
        is formatted per line (``str(prefix)``), so its owner may rename it meanwhile."""
        log = self.logger.info
        pending = b""
        while True:
            chunk = await stream.read(MAX_LINE)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                log("%s %s", prefix, line.decode("utf-8", "replace").rstrip("\r"))
            if len(pending) >= MAX_LINE:
                log("%s %s", prefix, pending.decode("utf-8", "replace"))
                pending = b""
        if pending:
            log("%s %s", prefix, pending.decode("utf-8", "replace"))

    def close(self) -> None:
        """Detach and close the file handler this object installed (if any)."""
        if self._handler is not None:
            self.logger.removeHandler(self._handler)
            self._handler.close()
            self._handler = None
            self.logger.propagate = self._propagate
