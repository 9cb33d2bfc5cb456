"""A CPU hog for the contended benchmark: busy-loop processes pinned to chosen cores.

Each hog is ``python -c <busy loop>`` at normal priority, pinned with ``sched_setaffinity`` to
one core, started in its own session. The loop itself stops after ``lifetime_s`` (so a
benchmark that dies without cleaning up leaves no hog behind for long); ``stop()`` kills each
hog by its pid and waits for it.

``start()`` verifies what it started: every hog must be alive, pinned to exactly its core,
runnable (state ``R``: a busy loop never sleeps) and burning CPU (its CPU time grows over a
short probe; on a loaded machine a hog at normal priority gets only its share of the core, so
the bar is 5% of the probe); otherwise it stops them all and raises ``RuntimeError`` naming the
hog that failed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from bench_procs import read_proc

#: The busy loop: pure Python, no sleep, bounded by a deadline checked every few million steps.
LOOP = (
    "import sys, time\n"
    "end = time.monotonic() + float(sys.argv[1])\n"
    "while time.monotonic() < end:\n"
    "    for _ in range(1_000_000):\n"
    "        pass\n"
)


@dataclass
class Hog:
    """Busy-loop processes, one per core in ``cores``."""

    cores: tuple[int, ...]
    lifetime_s: float = 3600.0
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, probe_s: float = 1.0) -> None:
        """Start one hog per core and verify each (alive, pinned, burning CPU)."""
        try:
            for core in self.cores:
                process = subprocess.Popen(
                    [sys.executable, "-c", LOOP, str(self.lifetime_s)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
                self.processes.append(process)
                os.sched_setaffinity(process.pid, {core})
            before = {p.pid: _cpu_s(p.pid) for p in self.processes}
            time.sleep(probe_s)
            for core, process in zip(self.cores, self.processes, strict=True):
                if process.poll() is not None:
                    raise RuntimeError(f"hog on core {core} exited ({process.returncode})")
                affinity = os.sched_getaffinity(process.pid)
                if affinity != {core}:
                    raise RuntimeError(f"hog on core {core} has affinity {sorted(affinity)}")
                info = read_proc(process.pid)
                if info is None or info.state != "R":
                    state = "gone" if info is None else info.state
                    raise RuntimeError(f"hog on core {core} is not running (state {state})")
                burnt = _cpu_s(process.pid) - before[process.pid]
                if burnt < probe_s * 0.05:
                    raise RuntimeError(
                        f"hog on core {core} burnt only {burnt:.2f} s of CPU in {probe_s:g} s"
                    )
        except BaseException:
            self.stop()
            raise

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def cpu_s(self) -> float:
        """CPU seconds all hogs have burnt so far."""
        return sum(_cpu_s(pid) for pid in self.pids)

    def stop(self) -> None:
        """Kill every hog by its pid and reap it (idempotent)."""
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        self.processes.clear()


def _cpu_s(pid: int) -> float:
    info = read_proc(pid)
    return 0.0 if info is None else info.cpu_s


def parse_cores(text: str, available: set[int]) -> tuple[int, ...]:
    """``--hog-cores``: the cores to pin one hog each to (``0`` or ``0,1``), checked.

    Raises ``ValueError`` for an empty list, a repeated core or one this process cannot use.
    """
    cores = tuple(int(part) for part in text.split(",") if part.strip())
    unusable = sorted(c for c in cores if c not in available)
    if not cores or unusable or len(set(cores)) != len(cores):
        raise ValueError(
            f"hog cores {text!r}: need distinct cores of {sorted(available)}"
            + (f"; not usable: {unusable}" if unusable else "")
        )
    return cores
