"""The results of a run: one record per measured point, medians per load, compare ratios, JSON.

The JSON document (``--json``) follows ``result.schema.json`` beside this module (schema
``torchwick-bench/1``). Latencies are milliseconds; a figure with no sample (no 2xx answer)
is ``null``. Header values (tokens) are never written, only their names.
"""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from torchwick import __version__
from torchwick.bench.load import PointOutcome
from torchwick.bench.options import BenchOptions
from torchwick.bench.stats import LatencySummary, median, ratio

SCHEMA_ID = "torchwick-bench/1"


@dataclass(frozen=True)
class PointRecord:
    """One measured point of one target."""

    target: str
    load: float
    repeat: int
    window_s: float
    requests: int
    ok: int
    throughput_rps: float
    latency: LatencySummary
    statuses: dict[int, int]
    connection_errors: int
    timeouts: int
    unfinished: int
    max_backlog: int
    truncated: bool
    #: Open loop only: the client's lateness putting requests on the queue.
    dispatch_lag: LatencySummary | None = None

    @classmethod
    def of(cls, target: str, load: float, repeat: int, out: PointOutcome) -> PointRecord:
        throughput = out.ok_in_window / out.window_s if out.window_s > 0 else math.nan
        return cls(
            target=target,
            load=load,
            repeat=repeat,
            window_s=out.window_s,
            requests=out.requests,
            ok=len(out.latencies_s),
            throughput_rps=throughput,
            latency=LatencySummary.of(out.latencies_s),
            statuses=dict(sorted(out.statuses.items())),
            connection_errors=out.connection_errors,
            timeouts=out.timeouts,
            unfinished=out.unfinished,
            max_backlog=out.max_backlog,
            truncated=out.truncated,
            dispatch_lag=LatencySummary.of(out.dispatch_lag_s) if out.dispatch_lag_s else None,
        )

    @property
    def errors(self) -> int:
        return (
            sum(self.statuses.values()) + self.connection_errors + self.timeouts + self.unfinished
        )


@dataclass(frozen=True)
class Summary:
    """Medians over the repeats of one target at one load; errors are summed."""

    target: str
    load: float
    repeats: int
    throughput_rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    statuses: dict[int, int]


def summarize(points: Sequence[PointRecord]) -> list[Summary]:
    """One :class:`Summary` per (target, load), in first-seen order."""
    groups: dict[tuple[str, float], list[PointRecord]] = {}
    for point in points:
        groups.setdefault((point.target, point.load), []).append(point)
    out = []
    for (target, load), group in groups.items():
        statuses: dict[int, int] = {}
        for point in group:
            for status, count in point.statuses.items():
                statuses[status] = statuses.get(status, 0) + count
        out.append(
            Summary(
                target=target,
                load=load,
                repeats=len(group),
                throughput_rps=median([p.throughput_rps for p in group]),
                p50_ms=median([p.latency.p50 for p in group]),
                p90_ms=median([p.latency.p90 for p in group]),
                p99_ms=median([p.latency.p99 for p in group]),
                max_ms=max((p.latency.max for p in group if p.latency.count), default=math.nan),
                errors=sum(p.errors for p in group),
                statuses=dict(sorted(statuses.items())),
            )
        )
    return out


@dataclass(frozen=True)
class Ratio:
    """First target over the compared one at one load (above 1: more throughput / slower)."""

    load: float
    throughput: float
    p50: float
    p99: float


def ratios(summaries: Sequence[Summary], first: str = "A", second: str = "B") -> list[Ratio]:
    """``first / second`` per load present for both targets."""
    by_key = {(s.target, s.load): s for s in summaries}
    out = []
    for s in summaries:
        if s.target != first or (second, s.load) not in by_key:
            continue
        other = by_key[(second, s.load)]
        out.append(
            Ratio(
                s.load,
                ratio(s.throughput_rps, other.throughput_rps),
                ratio(s.p50_ms, other.p50_ms),
                ratio(s.p99_ms, other.p99_ms),
            )
        )
    return out


def _num(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _load(value: float, options: BenchOptions) -> float | int:
    return int(value) if options.mode == "closed" else value


def _summary_json(lat: LatencySummary) -> dict[str, float | None]:
    return {
        "p50": _num(lat.p50),
        "p90": _num(lat.p90),
        "p99": _num(lat.p99),
        "max": _num(lat.max),
        "mean": _num(lat.mean),
    }


def _point_json(point: PointRecord, options: BenchOptions) -> dict[str, Any]:
    lag = point.dispatch_lag
    return {
        "target": point.target,
        "load": _load(point.load, options),
        "repeat": point.repeat,
        "window_s": point.window_s,
        "requests": point.requests,
        "ok": point.ok,
        "throughput_rps": _num(point.throughput_rps),
        "latency_ms": _summary_json(point.latency),
        "dispatch_lag_ms": _summary_json(lag) if lag is not None else None,
        "errors": {
            "total": point.errors,
            "status": {str(k): v for k, v in point.statuses.items()},
            "connection": point.connection_errors,
            "timeout": point.timeouts,
            "unfinished": point.unfinished,
        },
        "max_backlog": point.max_backlog,
        "truncated": point.truncated,
    }


def document(
    options: BenchOptions,
    urls: dict[str, str],
    names: dict[str, str],
    points: Sequence[PointRecord],
    *,
    started_at: str,
    finished_at: str,
    complete: bool,
    loop: str,
) -> dict[str, Any]:
    """The ``--json`` document of a run (see the module docstring)."""
    summaries = summarize(points)
    header_names = sorted({name for name, _ in options.headers})
    if options.token is not None:
        header_names.append("Authorization")
    return {
        "schema": SCHEMA_ID,
        "tool": {
            "torchwick": __version__,
            "python": platform.python_version(),
            "loop": loop,
        },
        "started_at": started_at,
        "finished_at": finished_at,
        "complete": complete,
        "mode": options.mode,
        "targets": [
            {"label": label, "name": names.get(label, url), "url": url}
            for label, url in urls.items()
        ],
        "settings": {
            "method": options.method,
            "body_bytes": len(options.body) if options.body is not None else 0,
            "body_source": options.body_source,
            "header_names": header_names,
            "duration_s": options.duration_s,
            "warmup_s": options.warmup_s,
            "max_requests": options.max_requests,
            "timeout_s": options.timeout_s,
            "repeats": options.repeats,
            "connections": options.connections if options.mode == "open" else None,
            "arrivals": options.arrivals if options.mode == "open" else None,
            "seed": options.seed if options.mode == "open" else None,
            "time_limit_s": options.time_limit_s,
        },
        "points": [_point_json(p, options) for p in points],
        "summary": [
            {
                "target": s.target,
                "load": _load(s.load, options),
                "repeats": s.repeats,
                "throughput_rps": _num(s.throughput_rps),
                "p50_ms": _num(s.p50_ms),
                "p90_ms": _num(s.p90_ms),
                "p99_ms": _num(s.p99_ms),
                "max_ms": _num(s.max_ms),
                "errors": s.errors,
                "status": {str(k): v for k, v in s.statuses.items()},
            }
            for s in summaries
        ],
        "ratios": [
            {
                "load": _load(r.load, options),
                "throughput": _num(r.throughput),
                "p50": _num(r.p50),
                "p99": _num(r.p99),
            }
            for r in ratios(summaries)
        ],
    }


def schema() -> dict[str, Any]:
    """The JSON Schema of :func:`document`'s output."""
    text = resources.files("torchwick.bench").joinpath("result.schema.json").read_text()
    value: dict[str, Any] = json.loads(text)
    return value


def write_json(path: Path, value: dict[str, Any]) -> None:
    """Write ``value`` to ``path`` (through a temporary file, so a reader never sees half)."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(value, indent=2, allow_nan=False) + "\n")
    temporary.replace(path)
