"""Text output of ``torchwick bench``: the per-point lines, the summary table, the progress line.

The progress display is a single stderr line rewritten in place (``\\r``), a few times a
second, and only when stderr is a terminal (``--progress auto``) or when asked
(``--progress always``). A plain line needs no dependency and leaves stdout (the report)
clean for logs and pipes.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import TextIO

from torchwick.bench.load import Mode, Progress
from torchwick.bench.results import PointRecord, Ratio, Summary


def fmt_ms(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:.2f}" if value < 100 else f"{value:.0f}"


def fmt_rate(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def fmt_ratio(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:.2f}x"


def fmt_load(value: float, mode: Mode) -> str:
    return f"c={int(value)}" if mode == "closed" else f"{value:g}/s"


def fmt_errors(statuses: dict[int, int], connection: int, timeouts: int, unfinished: int) -> str:
    parts = [f"{status}:{count}" for status, count in statuses.items()]
    for name, count in (("conn", connection), ("timeout", timeouts), ("unfinished", unfinished)):
        if count:
            parts.append(f"{name}:{count}")
    return " ".join(parts) or "0"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns right-aligned to their widest cell (the first left-aligned)."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])


def point_line(point: PointRecord, mode: Mode) -> str:
    """One line per measured point, printed as soon as it is done."""
    lat = point.latency
    errors = fmt_errors(point.statuses, point.connection_errors, point.timeouts, point.unfinished)
    cut = " (cut by --time-limit)" if point.truncated else ""
    lag = ""
    if point.dispatch_lag is not None:
        lag = f", client send lag p99 {fmt_ms(point.dispatch_lag.p99)} ms"
    return (
        f"{point.target} {fmt_load(point.load, mode)} #{point.repeat + 1}: "
        f"{fmt_rate(point.throughput_rps)} req/s, p50 {fmt_ms(lat.p50)} p90 {fmt_ms(lat.p90)} "
        f"p99 {fmt_ms(lat.p99)} max {fmt_ms(lat.max)} ms, errors {errors}{lag}{cut}"
    )


def summary_table(summaries: Sequence[Summary], mode: Mode, labels: dict[str, str]) -> str:
    rows = [
        [
            f"{s.target} {labels[s.target]}" if len(labels) > 1 else labels[s.target],
            fmt_load(s.load, mode),
            fmt_rate(s.throughput_rps),
            fmt_ms(s.p50_ms),
            fmt_ms(s.p90_ms),
            fmt_ms(s.p99_ms),
            fmt_ms(s.max_ms),
            str(s.errors),
            " ".join(f"{k}:{v}" for k, v in s.statuses.items()) or "-",
        ]
        for s in summaries
    ]
    headers = ["target", "load", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors"]
    return table([*headers, "by status"], rows)


def ratio_table(items: Sequence[Ratio], mode: Mode) -> str:
    rows = [
        [fmt_load(r.load, mode), fmt_ratio(r.throughput), fmt_ratio(r.p50), fmt_ratio(r.p99)]
        for r in items
    ]
    return table(["load", "req/s A/B", "p50 A/B", "p99 A/B"], rows)


class ProgressLine:
    """A one-line progress display on ``stream`` (a no-op when disabled)."""

    def __init__(self, enabled: bool, total_points: int, stream: TextIO = sys.stderr) -> None:
        self.enabled = enabled
        self.total = total_points
        self.stream = stream
        self.index = 0
        self.label = ""
        self._width = 0

    @staticmethod
    def wanted(setting: str, stream: TextIO = sys.stderr) -> bool:
        return setting == "always" or (setting == "auto" and stream.isatty())

    def start_point(self, label: str) -> None:
        self.index += 1
        self.label = label

    def update(self, progress: Progress) -> None:
        if not self.enabled:
            return
        planned = max(progress.planned_s, 1e-9)
        fraction = min(1.0, progress.elapsed_s / planned)
        filled = int(fraction * 20)
        bar = "#" * filled + "." * (20 - filled)
        text = (
            f"[{bar}] point {self.index}/{self.total} {self.label} {progress.phase} "
            f"{progress.elapsed_s:.1f}/{progress.planned_s:.1f}s ok {progress.ok} "
            f"errors {progress.errors}"
        )
        self._width = max(self._width, len(text))
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()

    def clear(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0
