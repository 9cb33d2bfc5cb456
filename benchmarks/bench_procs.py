"""Where the CPU goes: per-process CPU seconds and RSS from /proc (Linux only).

A server is a tree of processes under the one the benchmark started. Each process gets a role:
``frontend`` (TorchServe's JVM; torchwick's server process), ``worker`` (model workers) or
``other`` (launchers, metric collectors, multiprocessing helpers). A snapshot is taken at each
edge of a measured window; the difference gives CPU seconds per role over the window.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")

Classifier = Callable[[int, "ProcInfo"], str]


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    comm: str
    #: One letter: R running, S sleeping, Z zombie, ...
    state: str
    cpu_s: float


def read_proc(pid: int) -> ProcInfo | None:
    """One process's parent, name and user+system CPU seconds; ``None`` when it is gone."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The name is in parentheses and may contain spaces: split after the last ')'.
    open_paren, close_paren = raw.index("("), raw.rindex(")")
    fields = raw[close_paren + 2 :].split()
    # fields[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
    ticks = int(fields[11]) + int(fields[12])
    comm = raw[open_paren + 1 : close_paren]
    return ProcInfo(pid, int(fields[1]), comm, fields[0], ticks / CLOCK_TICKS)


def all_procs() -> dict[int, ProcInfo]:
    procs: dict[int, ProcInfo] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            info = read_proc(int(entry.name))
            if info is not None:
                procs[info.pid] = info
    return procs


def tree(root: int, procs: dict[int, ProcInfo] | None = None) -> dict[int, ProcInfo]:
    """``root`` and all its descendants that are alive now."""
    procs = all_procs() if procs is None else procs
    children: dict[int, list[int]] = {}
    for info in procs.values():
        children.setdefault(info.ppid, []).append(info.pid)
    found: dict[int, ProcInfo] = {}
    pending = [root]
    while pending:
        pid = pending.pop()
        if pid in procs and pid not in found:
            found[pid] = procs[pid]
            pending.extend(children.get(pid, ()))
    return found


def cmdline(pid: int) -> str:
    try:
        return (
            (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def rss_bytes(pid: int) -> int | None:
    """Resident set size of one process (``VmRSS``), or ``None`` when it is gone."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def machine_busy_s() -> float:
    """CPU seconds all processes of the machine have spent busy since boot (all cores)."""
    first = (PROC / "stat").read_text().splitlines()[0].split()
    # cpu user nice system idle iowait irq softirq steal ...
    values = [int(v) for v in first[1:9]]
    busy = values[0] + values[1] + values[2] + values[5] + values[6] + values[7]
    return busy / CLOCK_TICKS


def self_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


@dataclass(frozen=True)
class CpuSnapshot:
    #: pid -> (role, cpu seconds) for the server under test.
    server: dict[int, tuple[str, float]]
    #: Total CPU seconds of the other servers' trees (idle bystanders).
    bystanders: dict[int, float]
    client_s: float
    machine_s: float


def snapshot(
    server_root: int, classify: Classifier, bystander_roots: Iterable[int] = ()
) -> CpuSnapshot:
    procs = all_procs()
    server = {
        pid: (classify(pid, info), info.cpu_s) for pid, info in tree(server_root, procs).items()
    }
    bystanders: dict[int, float] = {}
    for root in bystander_roots:
        for pid, info in tree(root, procs).items():
            bystanders[pid] = info.cpu_s
    return CpuSnapshot(server, bystanders, self_cpu_s(), machine_busy_s())


@dataclass(frozen=True)
class CpuUse:
    """CPU seconds spent in a window, by role."""

    frontend_s: float
    workers_s: float
    server_other_s: float
    client_s: float
    bystanders_s: float
    #: Everything else on the machine (other users of this shared box).
    rest_of_machine_s: float
    #: The contended benchmark's CPU hogs (``bench_hog``), taken out of the rest.
    hog_s: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "frontend_s": round(self.frontend_s, 4),
            "workers_s": round(self.workers_s, 4),
            "server_other_s": round(self.server_other_s, 4),
            "client_s": round(self.client_s, 4),
            "bystanders_s": round(self.bystanders_s, 4),
            "rest_of_machine_s": round(self.rest_of_machine_s, 4),
            "hog_s": round(self.hog_s, 4),
        }


def difference(before: CpuSnapshot, after: CpuSnapshot) -> CpuUse:
    """CPU spent between two snapshots; a process born in between counts from zero."""
    by_role = {"frontend": 0.0, "worker": 0.0, "other": 0.0}
    for pid, (role, cpu) in after.server.items():
        previous = before.server.get(pid, (role, 0.0))[1]
        by_role[role] = by_role.get(role, 0.0) + max(0.0, cpu - previous)
    bystanders = sum(
        max(0.0, cpu - before.bystanders.get(pid, 0.0)) for pid, cpu in after.bystanders.items()
    )
    client = after.client_s - before.client_s
    machine = after.machine_s - before.machine_s
    ours = sum(by_role.values()) + bystanders + client
    return CpuUse(
        frontend_s=by_role["frontend"],
        workers_s=by_role["worker"],
        server_other_s=by_role["other"],
        client_s=client,
        bystanders_s=bystanders,
        rest_of_machine_s=max(0.0, machine - ours),
    )
