"""torchwick against torchwick-base (another commit's venv) within one serving-benchmark run.

``serving_benchmark.py --baseline-python PATH`` adds the server ``torchwick-base``: torchwick as
installed in PATH's venv, started, loaded and measured exactly like torchwick (same client, same
bodies, same archives' inputs, servers alternated ABBA). This module names the checkout each
interpreter imports torchwick from and prints the new/base comparison of the run's medians.

Every ratio is oriented so that above 1 means this tree is better: req/s as new / base, latency
as base / new. A hot-path figure below ``WORSE_BELOW`` is marked: the issue-7 guard's three are
MLP batch 1 p50 at c=1, MLP batch 8 req/s at c=32 and ``/ping`` req/s at c=32.
"""

from __future__ import annotations

import math
import statistics
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from bench_servers import TORCHWICK, TORCHWICK_BASE

WORSE_BELOW = 0.95
#: (config key, concurrency, figure) of the points that guard the hot path.
HOT_PATH = (("mlp-b1", 1, "p50"), ("mlp-b8", 32, "req/s"))


class PointSummary(Protocol):
    """What the comparison reads of one (config, concurrency, server) summary."""

    throughput: float
    p50: float
    p90: float
    p99: float
    errors: int
    frontend_us_per_request: float


PROBE = (
    "import os, torchwick; print(getattr(torchwick, '__version__', '?')); "
    "print(os.path.dirname(torchwick.__file__))"
)


def source_of(python: Path, cwd: Path) -> str:
    """torchwick's version under ``python``, where it is imported from and that checkout's commit.

    ``?`` when ``python`` cannot import it. Run in ``cwd`` (not a checkout), since ``-c`` puts the
    working directory first on ``sys.path``.
    """
    try:
        found = subprocess.run(
            [str(python), "-c", PROBE], capture_output=True, text=True, timeout=120, check=True,
            cwd=cwd,
        )  # fmt: skip
        version, where = found.stdout.strip().splitlines()[-2:]
    except (OSError, subprocess.SubprocessError, ValueError):
        return "?"
    package = Path(where)
    try:
        commit = subprocess.run(
            ["git", "-C", str(package), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(package), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return f"{version} from {package}"
    return f"{version} from {package} at {commit}{' + uncommitted changes' if dirty else ''}"


def _ratio(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}x"


def _divide(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator or math.isnan(numerator) or math.isnan(denominator):
        return None
    return numerator / denominator


def _flag(ratio: float | None, hot: bool) -> str:
    return " <0.95" if hot and ratio is not None and ratio < WORSE_BELOW else ""


def ping_figures(startup: Sequence[Mapping[str, Any]], server: str) -> dict[str, float] | None:
    """Medians of the ``/ping`` c=32 loads of ``server`` (one per measured empty start)."""
    pings = [s for s in startup if s["server"] == server and "ping_throughput_c32" in s]
    if not pings:
        return None

    def mid(key: str) -> float:
        values = [float(s[key]) for s in pings if s.get(key) is not None]
        finite = [v for v in values if not math.isnan(v)]
        return statistics.median(finite) if finite else float("nan")

    return {
        "throughput": mid("ping_throughput_c32"),
        "p50": mid("ping_p50_ms"),
        "p90": mid("ping_p90_ms"),
        "p99": mid("ping_p99_ms"),
        "frontend_cores": mid("ping_frontend_cores"),
        "n": float(len(pings)),
    }


def report_baseline(
    keys: Sequence[tuple[str, int]],
    summaries: Mapping[tuple[str, int, str], PointSummary],
    startup: Sequence[Mapping[str, Any]],
    *,
    table: Callable[[Sequence[str], Sequence[Sequence[str]]], str],
    fmt_rate: Callable[[float | None], str],
    fmt_ms: Callable[[float | None], str],
    say: Callable[[str], None],
) -> None:
    """Print the new/base table for ``keys`` ((config, concurrency) in run order) and /ping."""
    say("")
    say(
        "== torchwick (this tree) vs torchwick-base (--baseline-python), same run, alternated: "
        "req/s new/base, latency base/new (above 1 = this tree better; <0.95 marks a hot-path "
        "figure worse than 0.95x)"
    )
    headers = ["point", "c", "tw req/s", "base req/s", "req/s", "tw p50", "base p50", "p50",
               "tw p90", "base p90", "p90", "tw p99", "base p99", "p99", "err tw/base",
               "frontend us/req tw/base"]  # fmt: skip
    rows: list[list[str]] = []
    for config, concurrency in keys:
        new = summaries.get((config, concurrency, TORCHWICK))
        base = summaries.get((config, concurrency, TORCHWICK_BASE))
        if new is None or base is None:
            continue
        hot = {figure for (c, n, figure) in HOT_PATH if (c, n) == (config, concurrency)}
        rate = _divide(new.throughput, base.throughput)
        p50, p90, p99 = (_divide(getattr(base, f), getattr(new, f)) for f in ("p50", "p90", "p99"))
        rows.append(
            [config, str(concurrency), fmt_rate(new.throughput), fmt_rate(base.throughput),
             _ratio(rate) + _flag(rate, "req/s" in hot), fmt_ms(new.p50), fmt_ms(base.p50),
             _ratio(p50) + _flag(p50, "p50" in hot), fmt_ms(new.p90), fmt_ms(base.p90),
             _ratio(p90), fmt_ms(new.p99), fmt_ms(base.p99), _ratio(p99),
             f"{new.errors}/{base.errors}",
             f"{fmt_rate(new.frontend_us_per_request)}/{fmt_rate(base.frontend_us_per_request)}"]
        )  # fmt: skip
    new_ping, base_ping = ping_figures(startup, TORCHWICK), ping_figures(startup, TORCHWICK_BASE)
    if new_ping is not None and base_ping is not None:
        rate = _divide(new_ping["throughput"], base_ping["throughput"])
        p50, p90, p99 = (_divide(base_ping[f], new_ping[f]) for f in ("p50", "p90", "p99"))
        per_request = [
            ping["frontend_cores"] / ping["throughput"] * 1e6 if ping["throughput"] else None
            for ping in (new_ping, base_ping)
        ]
        rows.append(
            ["/ping", "32", fmt_rate(new_ping["throughput"]), fmt_rate(base_ping["throughput"]),
             _ratio(rate) + _flag(rate, True), fmt_ms(new_ping["p50"]), fmt_ms(base_ping["p50"]),
             _ratio(p50), fmt_ms(new_ping["p90"]), fmt_ms(base_ping["p90"]), _ratio(p90),
             fmt_ms(new_ping["p99"]), fmt_ms(base_ping["p99"]), _ratio(p99), "-",
             f"{fmt_rate(per_request[0])}/{fmt_rate(per_request[1])}"]
        )  # fmt: skip
    say(table(headers, rows))
    pings = f"{new_ping['n']:.0f}/{base_ping['n']:.0f}" if new_ping and base_ping else "-"
    say(
        f"  /ping: medians of {pings} loads (tw/base), one per measured empty start "
        "(--ping-repeats); frontend us/req = frontend CPU time per 2xx."
    )
