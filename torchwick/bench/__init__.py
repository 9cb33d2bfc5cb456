"""``torchwick bench``: a load generator for any running model server (torchwick or TorchServe).

Closed loop (N concurrent clients) and open loop (Poisson arrivals at a rate, latency measured
from each request's scheduled send time), sweeps over a list of loads, ``--compare`` of two
servers alternated point by point, a text report, ``--json`` results and a ``--plot`` PNG.
Only loopback targets are loaded unless allowed; every run is bounded in time and count.
See ``docs/bench.md``.
"""

from torchwick.bench.runner import bench_main

__all__ = ["bench_main"]
