"""How long this process's threads waited for a CPU: the run-queue delay from ``/proc``.

Linux keeps, per thread, the nanoseconds it spent runnable but not running (the second field
of ``/proc/<pid>/task/<tid>/schedstat``). Summed over a worker's threads across one batch, it
says how much of the batch the worker lost to other processes on its cores, which wall time and
CPU time alone cannot tell apart from a slow model (see ``threads.AdaptiveThreads``).

``RunDelayMeter.read()`` returns the sum in seconds, or ``None`` where schedstat is not
available (not Linux, or a kernel without ``CONFIG_SCHED_INFO``); a thread that exits between
listing and reading is skipped. Reading costs one small file per thread (a worker has a few),
which is why the worker skips it for tiny batches.
"""

from __future__ import annotations

import os
from pathlib import Path

TASKS = Path("/proc/self/task")


class RunDelayMeter:
    """Sums the run-queue delay of every thread of this process (seconds, monotonic)."""

    def __init__(self, tasks: Path = TASKS) -> None:
        self._tasks = str(tasks)
        self.available = self.read() is not None

    def read(self) -> float | None:
        """Total run-queue delay of the threads alive now; ``None`` when it cannot be read."""
        try:
            names = os.listdir(self._tasks)
        except OSError:
            return None
        total = 0
        seen = False
        for name in names:
            try:
                with open(f"{self._tasks}/{name}/schedstat", "rb") as file:
                    fields = file.read().split()
                total += int(fields[1])
                seen = True
            except (OSError, IndexError, ValueError):
                continue  # the thread has exited, or the kernel reports nothing
        return total / 1e9 if seen else None
