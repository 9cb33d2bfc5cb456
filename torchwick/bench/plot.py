"""``--plot FILE.png``: latency percentiles and throughput against load (matplotlib).

Two panels side by side: p50/p90/p99 latency (ms, log scale) against the load (concurrency or
offered rate), and throughput against the load; one colour per target, one line style per
percentile. Lines join the medians over the repeats; with more than one repeat, vertical bars
show the range (lowest to highest repeat) of p50 and of throughput, so the machine's noise is
in the picture. matplotlib is the optional ``plot`` extra (``pip install 'torchwick[plot]'``);
it is imported only here, with the non-interactive Agg backend, so no display is needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torchwick.bench.load import Mode
from torchwick.bench.results import PointRecord
from torchwick.bench.stats import median

_STYLES = {"p50": "-", "p90": "--", "p99": ":"}
_COLOURS = {"A": "tab:blue", "B": "tab:orange"}


def _series(points: Sequence[PointRecord], target: str, figure: str) -> dict[float, list[float]]:
    out: dict[float, list[float]] = {}
    for point in points:
        if point.target != target:
            continue
        value = point.throughput_rps if figure == "rps" else getattr(point.latency, figure)
        if math.isfinite(value):
            out.setdefault(point.load, []).append(value)
    return dict(sorted(out.items()))


def _line(axes: Any, series: dict[float, list[float]], bars: bool, **style: Any) -> None:
    loads = list(series)
    medians = [median(values) for values in series.values()]
    if bars and any(len(values) > 1 for values in series.values()):
        low = [m - min(v) for m, v in zip(medians, series.values(), strict=True)]
        high = [max(v) - m for m, v in zip(medians, series.values(), strict=True)]
        axes.errorbar(loads, medians, yerr=[low, high], capsize=3, **style)
    else:
        axes.plot(loads, medians, **style)


def write_plot(
    path: Path, points: Sequence[PointRecord], mode: Mode, names: dict[str, str], title: str
) -> None:
    """Render ``points`` into a PNG at ``path``. Raises ``ImportError`` without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    figure, (latency_axes, rate_axes) = plt.subplots(1, 2, figsize=(11, 4.4))
    try:
        for target, name in names.items():
            colour = _COLOURS.get(target, "tab:green")
            for figure_name, style in _STYLES.items():
                _line(
                    latency_axes,
                    _series(points, target, figure_name),
                    figure_name == "p50",
                    linestyle=style,
                    marker="o",
                    color=colour,
                    label=f"{name} {figure_name}",
                )
            _line(
                rate_axes,
                _series(points, target, "rps"),
                True,
                marker="o",
                color=colour,
                label=name,
            )
        loads = sorted({p.load for p in points})
        xlabel = "concurrency (closed loop)" if mode == "closed" else "offered rate, req/s (open)"
        for axes in (latency_axes, rate_axes):
            axes.set_xlabel(xlabel)
            axes.grid(True, which="major", alpha=0.3)
            if len(loads) > 1 and loads[0] > 0:
                axes.set_xscale("log")
                axes.xaxis.set_major_locator(FixedLocator(loads))
                axes.xaxis.set_minor_locator(NullLocator())
                axes.xaxis.set_major_formatter(ScalarFormatter())
        latency_axes.set_yscale("log")
        latency_axes.set_ylabel("latency, ms")
        latency_axes.set_title("latency percentiles (bars: p50 range over repeats)")
        latency_axes.legend(fontsize="small")
        rate_axes.set_ylabel("throughput, req/s (2xx)")
        rate_axes.set_title("throughput (bars: range over repeats)")
        rate_axes.set_ylim(bottom=0)
        rate_axes.legend(fontsize="small")
        figure.suptitle(title, fontsize="medium")
        figure.tight_layout()
        figure.savefig(path, dpi=110)
    finally:
        plt.close(figure)
