"""What ``/proc`` says about processes a test started: parents, descent, and whether one is
gone. Tests check descent before they signal anything (never a pid taken on trust)."""

from __future__ import annotations

from pathlib import Path


def parent_of(pid: int) -> int | None:
    """The parent pid, or ``None`` when the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # After the (parenthesised, free-text) name: state, ppid, ...
    return int(stat.rsplit(")", 1)[1].split()[1])


def descends_from(pid: int, ancestor: int) -> bool:
    """Whether ``ancestor`` is ``pid`` or one of its ancestors."""
    current: int | None = pid
    for _ in range(64):  # deeper than any real process tree here
        if current is None or current <= 1:
            return False
        if current == ancestor:
            return True
        current = parent_of(current)
    return False


def descendants(root: int) -> set[int]:
    """Every live process below ``root``."""
    found = set()
    for entry in Path("/proc").iterdir():
        pid = int(entry.name) if entry.name.isdigit() else root
        if pid != root and descends_from(pid, root):
            found.add(pid)
    return found


def gone(pid: int) -> bool:
    """The process has exited (a zombie counts: it holds no memory and runs nothing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"
