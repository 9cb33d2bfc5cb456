"""A minimal progress bar for archiving large models, drawn on stderr only when it is a TTY.

Logs and pipes stay clean: when stderr is not a terminal nothing is drawn at all, and the bar
never touches stdout, where the CLI prints the archive's digest for scripts to read.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

#: Inputs at least this large get a bar (when stderr is a terminal).
PROGRESS_THRESHOLD_BYTES = 64 << 20
_WIDTH = 30
_MIB = 1 << 20


class ProgressBar:
    """Call with byte counts as they are written; ``close`` ends the line."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None) -> None:
        self._total = max(total, 1)
        self._label = label
        self._stream = stream if stream is not None else sys.stderr
        self._done = 0
        self._last_draw = 0.0

    def __call__(self, count: int) -> None:
        self._done += count
        now = time.monotonic()
        # Redrawing on every 1 MiB chunk would flood slow terminals; 10 times a second is plenty.
        if now - self._last_draw >= 0.1 or self._done >= self._total:
            self._last_draw = now
            self._draw()

    def _draw(self) -> None:
        fraction = min(self._done / self._total, 1.0)
        filled = int(fraction * _WIDTH)
        bar = "#" * filled + "-" * (_WIDTH - filled)
        self._stream.write(
            f"\r{self._label} [{bar}] {fraction:4.0%} "
            f"{self._done // _MIB}/{self._total // _MIB} MiB"
        )
        self._stream.flush()

    def close(self) -> None:
        """Draw the final state and move to a new line."""
        self._draw()
        self._stream.write("\n")
        self._stream.flush()


def wants_progress(total_bytes: int, stream: TextIO | None = None) -> bool:
    """True when the inputs are large and ``stream`` (default stderr) is an interactive TTY."""
    target = stream if stream is not None else sys.stderr
    try:
        interactive = target.isatty()
    except (AttributeError, ValueError):
        interactive = False
    return interactive and total_bytes >= PROGRESS_THRESHOLD_BYTES
