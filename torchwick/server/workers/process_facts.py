"""Facts about a worker process outside the frame protocol: the load failure a pool or a
spare handles, the words for an exit code (logs, describe), and its resident memory."""

from __future__ import annotations

import os
import signal

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class LoadFailedError(Exception):
    """A worker could not start or load its model; ``status`` is 507 for out-of-memory."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def describe_exit(returncode: int) -> str:
    """``exited with code 1`` or ``killed by SIGKILL``."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


def resident_bytes(pid: int) -> int:
    """Resident set size of ``pid`` from ``/proc/<pid>/statm``; 0 when unknown."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return 0
