"""How long this process's threads waited for a CPU: the run-queue delay from ``/proc``.

Linux keeps, per thread, the nanoseconds it spent runnable but not running (the second field
of ``/proc/<pid>/task/<tid>/schedstat``). Summed over a worker's threads across one batch, it
says how much of the batch the worker lost to other processes on its cores, which wall time and
CPU time alone cannot tell apart from a slow model (see ``threads.AdaptiveThreads``).

``RunDelayMeter.read()`` returns the sum in seconds, or ``None`` where schedstat is not
available (not Linux, or a kernel without ``CONFIG_SCHED_INFO``); a thread that exits between
listing and reading is skipped. Reading costs a few microseconds per batch (a worker has a
few threads); the worker still skips it for tiny batches.
"""

from __future__ import annotations

import os
from pathlib import Path

TASKS = Path("/proc/self/task")


class RunDelayMeter:
    """Sums the run-queue delay of every thread of this process (seconds, monotonic).

    Each thread's schedstat file stays open and is re-read with ``pread`` (about 1 us a thread,
    where opening it anew costs about 10); the task list is read each time, so a thread that
    starts is opened and one that exits is closed. ``close()`` closes them all.
    """

    def __init__(self, tasks: Path = TASKS) -> None:
        self._tasks = str(tasks)
        self._files: dict[str, int] = {}
        self.available = self.read() is not None

    def read(self) -> float | None:
        """Total run-queue delay of the threads alive now; ``None`` when it cannot be read."""
        try:
            names = set(os.listdir(self._tasks))
        except OSError:
            return None
        for name in [n for n in self._files if n not in names]:
            os.close(self._files.pop(name))
        total = 0
        seen = False
        for name in names:
            try:
                fd = self._files.get(name)
                if fd is None:
                    fd = self._files[name] = os.open(f"{self._tasks}/{name}/schedstat", os.O_RDONLY)
                total += int(os.pread(fd, 256, 0).split()[1])
                seen = True
            except (OSError, IndexError, ValueError):
                continue  # the thread has exited, or the kernel reports nothing
        return total / 1e9 if seen else None

    def close(self) -> None:
        """Close the files kept open (the meter reads nothing afterwards until re-opened)."""
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()
