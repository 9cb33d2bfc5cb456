"""``--plot FILE.png``: latency percentiles and throughput against load (matplotlib).

Two panels side by side: p50/p90/p99 latency (ms, log scale) against the load (concurrency or
offered rate), and throughput against the load; one colour per target, one line style per
percentile; points are medians over the repeats. matplotlib is the optional ``plot`` extra
(``pip install 'torchwick[plot]'``); it is imported only here, with the non-interactive Agg
backend, so no display is needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from torchwick.bench.load import Mode
from torchwick.bench.results import Summary

_STYLES = {"p50": "-", "p90": "--", "p99": ":"}
_COLOURS = {"A": "tab:blue", "B": "tab:orange"}


def write_plot(
    path: Path, summaries: Sequence[Summary], mode: Mode, labels: dict[str, str], title: str
) -> None:
    """Render ``summaries`` into a PNG at ``path``. Raises ``ImportError`` without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (latency_axes, rate_axes) = plt.subplots(1, 2, figsize=(11, 4.2))
    try:
        for target, label in labels.items():
            rows = sorted((s for s in summaries if s.target == target), key=lambda s: s.load)
            loads = [s.load for s in rows]
            colour = _COLOURS.get(target, "tab:green")
            for name, style in _STYLES.items():
                values = [getattr(s, f"{name}_ms") for s in rows]
                values = [v if math.isfinite(v) else math.nan for v in values]
                latency_axes.plot(
                    loads, values, style, marker="o", color=colour, label=f"{label} {name}"
                )
            rate_axes.plot(
                loads, [s.throughput_rps for s in rows], "-", marker="o", color=colour, label=label
            )
        xlabel = "concurrency (closed loop)" if mode == "closed" else "offered rate, req/s (open)"
        for axes in (latency_axes, rate_axes):
            axes.set_xlabel(xlabel)
            axes.grid(True, which="both", alpha=0.3)
            if len({s.load for s in summaries}) > 1 and min(s.load for s in summaries) > 0:
                axes.set_xscale("log")
        latency_axes.set_yscale("log")
        latency_axes.set_ylabel("latency, ms")
        latency_axes.set_title("latency percentiles")
        latency_axes.legend(fontsize="small")
        rate_axes.set_ylabel("throughput, req/s (2xx)")
        rate_axes.set_title("throughput")
        rate_axes.set_ylim(bottom=0)
        rate_axes.legend(fontsize="small")
        figure.suptitle(title, fontsize="medium")
        figure.tight_layout()
        figure.savefig(path, dpi=110)
    finally:
        plt.close(figure)
