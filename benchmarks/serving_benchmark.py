"""Serving benchmark: torchwick beside real TorchServe 0.12 and the in-process forward ceiling.

How to run (from the repository root, with torchwick's venv)::

    .venv/bin/python benchmarks/serving_benchmark.py           # full run: 10-12 min on a quiet box
    .venv/bin/python benchmarks/serving_benchmark.py --quick   # smoke run: about 2 minutes
    .venv/bin/python benchmarks/serving_benchmark.py --models mlp --servers torchwick \\
        --concurrency 1,32 --seconds 3 --json results.json

TorchServe is looked for in ``$TORCHSERVE_VENV`` (default ``/work/tsvenv``; build it with
``benchmarks/torchserve_env.sh``). When it (or Java) is missing, its column is skipped with the
reason printed; the same holds for torchwick when ``python -m torchwick.server`` does not run.

What it does and measures:

- Builds, with seeded random weights, an MLP 64-256-256-10 and a ResNet-18-shaped CNN (written
  by hand, no torchvision), saved as TorchScript. Bodies: 64 floats as JSON for the MLP, one
  3x224x224 float32 tensor as raw bytes (602,112 bytes) for the ResNet.
- Archives them with one handler file (``bench_handler.py``, a ``BaseHandler`` subclass) using
  each server's own ``torch-model-archiver`` (``--archiver own``, the default), or torchwick's
  archives for both (``--archiver torchwick``, an interop check).
- For each serving config (batch 1; batch 8 with ``--max-batch-delay`` ms; and for the models in
  ``--tuned``, batch 8 with 2 workers, TorchServe with ``OMP_NUM_THREADS=1`` as its best tuned
  config) it starts both servers side by side on free 127.0.0.1 ports with token auth off,
  then, at each concurrency, runs closed-loop points alternating the servers (ABBA order over
  ``--repeats``), each point warmed up (discarded), measured, and drained.
- Prints per config and concurrency: 2xx throughput and p50/p90/p99 (medians of the repeats),
  errors (non-2xx and connection failures, counted apart), the ratios torchwick / TorchServe and
  server / ceiling, where the ceiling is the scripted model's forward alone in this process with
  the same thread budget as one server worker (times the number of workers), timed once before
  each round of that config's points so that it meets the same noise (its median is used).
- Prints CPU use per point from /proc: frontend, workers, other server processes, this client,
  the idle server beside it, and the rest of the machine (which is shared and noisy: compare
  only ratios within one run).
- Prints start to first ``/ping`` 200 (empty model store), frontend idle RSS, ``/ping``
  throughput, start to first 2xx prediction per config, frontend RSS after load, and the
  client's own ceiling against a trivial endpoint.

Two commits in one run: ``--baseline-python /other/checkout/.venv/bin/python`` adds the server
``torchwick-base`` (torchwick as that venv installs it), measured beside torchwick with the same
client and bodies, alternated, and a table of new/base ratios (``bench_compare.py``). For
example, the issue-7 guard (add ``--ping-repeats 3`` for three alternated ``/ping`` loads)::

    .venv/bin/python benchmarks/serving_benchmark.py --models mlp --servers torchwick \
        --baseline-python /work/wt-base/.venv/bin/python --tuned '' --concurrency 1,32 \
        --seconds 4 --repeats 3 --startup-repeats 3 --ping-repeats 3

Under contention (``--contended``, or ``--hog-cores 0`` with any plan): a busy-loop process at
normal priority pinned to each listed core (``bench_hog.py``; started and verified before the
configs, killed at the end) runs beside both servers for every point, and the CPU table gains
its share. ``--contended`` alone is ResNet-18 batch 8 at c=32 with a hog on core 0, servers
alternated, without the start-up and client-ceiling steps (``--hog-cores ''`` makes it the
control run without a hog); torchwick's workers' drops to one thread are counted from its
model log::

    .venv/bin/python benchmarks/serving_benchmark.py --contended --repeats 4 --seconds 8

Nothing here asserts a number: it measures and prints (and writes ``--json``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import torch
from bench_client import LoadResult, build_request, loop_name, new_event_loop, run_load
from bench_compare import report_baseline, source_of
from bench_hog import Hog, parse_cores
from bench_models import MODEL_NAMES, BenchModel, Ceiling, CeilingMeter, build_model
from bench_procs import CpuSnapshot, CpuUse, difference, snapshot
from bench_servers import (
    HOST,
    LABELS,
    SHORT,
    TORCHSERVE,
    TORCHWICK,
    TORCHWICK_BASE,
    ModelServing,
    Server,
    StartTiming,
    build_archive,
    remove_tree,
)

T = TypeVar("T")
HERE = Path(__file__).resolve().parent
HANDLER = HERE / "bench_handler.py"
CORES = len(os.sched_getaffinity(0))
MB = 1024 * 1024


# --- options -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    models: tuple[str, ...]
    servers: tuple[str, ...]
    concurrency: tuple[int, ...]
    tuned_models: tuple[str, ...]
    tuned_concurrency: tuple[int, ...]
    seconds: float
    warmup: float
    repeats: int
    max_batch_delay: int
    ceiling_seconds: float
    startup_repeats: int
    #: Empty starts (of the first ``startup_repeats``) that also measure /ping at c=32.
    ping_repeats: int
    max_requests: int
    request_timeout: float
    start_timeout: float
    archiver: str
    torchserve_venv: Path
    torchwick_python: Path
    #: Interpreter of the ``torchwick-base`` server (another commit's venv), if any.
    baseline_python: Path | None
    #: Extra config.properties lines per server.
    properties: dict[str, tuple[str, ...]]
    json_path: Path | None
    keep: bool
    quick: bool
    #: Cores that get a busy-loop hog each for the whole run (empty: none).
    hog_cores: tuple[int, ...] = ()
    #: Only these serving configs (keys such as ``resnet-b8``; empty: all of the plan).
    only_configs: tuple[str, ...] = ()
    #: ``--contended``: skip the start-up and client-ceiling steps.
    contended: bool = False


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _ints(text: str) -> tuple[int, ...]:
    values = tuple(int(part) for part in _csv(text))
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def parse_options(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        description="torchwick vs TorchServe 0.12 serving benchmark (see the module docstring). "
        "Defaults are given as full / --quick."
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="smoke run of about 2 minutes")
    add("--models", help=f"of {','.join(MODEL_NAMES)} (mlp,resnet; --contended: resnet)")
    add("--servers", default=f"{TORCHWICK},{TORCHSERVE}", help="(torchwick,torchserve)")
    add("--concurrency", type=_ints, help="client connections per point (1,8,32,64 / 1,32)")
    add("--tuned", help="models that also get batch 8 x 2 workers (mlp; '' none; --contended '')")
    add("--tuned-concurrency", type=_ints, default=(32,), help="for those configs (32)")
    add("--seconds", type=float, help="measured seconds per point (4 / 1)")
    add("--warmup", type=float, help="discarded seconds per point, at least a round (0.5 / 0.3)")
    add("--repeats", type=int, help="points per server, config and concurrency (3 / 1)")
    add("--max-batch-delay", type=int, default=5, help="ms, for the batch-8 configs (5)")
    add("--ceiling-seconds", type=float, help="per in-process ceiling timing (0.5 / 0.3)")
    add("--startup-repeats", type=int, help="starts with an empty store per server (3 / 1)")
    add("--ping-repeats", type=int, default=1, help="of those, how many load /ping at c=32 (1)")
    add("--max-requests", type=int, default=2_000_000, help="2xx responses per point at most")
    add("--request-timeout", type=float, default=30.0, help="seconds per request (30)")
    add("--start-timeout", type=float, default=60.0, help="s to /ping 200, then to a 2xx (60)")
    add(
        "--archiver",
        choices=("own", "torchwick"),
        default="own",
        help="own: each server's torch-model-archiver; torchwick: torchwick's .mar for both",
    )
    add(
        "--torchserve-venv",
        type=Path,
        default=Path(os.environ.get("TORCHSERVE_VENV", "/work/tsvenv")),
        help="venv with torchserve 0.12 ($TORCHSERVE_VENV, else /work/tsvenv)",
    )
    add(
        "--torchwick-python",
        type=Path,
        default=Path(sys.executable),
        help="interpreter that runs `-m torchwick.server` (this one)",
    )
    add(
        "--baseline-python",
        type=Path,
        help="another venv's interpreter: adds server torchwick-base (that commit's torchwick) "
        "and new/base ratios",
    )
    add(
        "--torchwick-property",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra config.properties line for torchwick (repeatable), e.g. worker_threads=1",
    )
    add(
        "--torchserve-property",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra config.properties line for TorchServe (repeatable)",
    )
    add(
        "--contended",
        action="store_true",
        help="ResNet-18 batch 8 at c=32 beside a CPU hog on core 0 (unless --models, "
        "--configs, --concurrency or --hog-cores say otherwise); no start-up steps",
    )
    add(
        "--hog-cores",
        help="cores to pin one busy-loop hog each to, e.g. 0 or 0,1 (none; --contended: 0, "
        "'' for its control run without a hog)",
    )
    add("--configs", default="", help="only these serving configs, e.g. resnet-b8 (all)")
    add("--json", type=Path, help="also write every result to this file")
    add("--keep", action="store_true", help="keep the work dir (archives, server logs)")
    args = parser.parse_args(argv)

    quick = bool(args.quick)
    contended = bool(args.contended)
    if contended:
        args.models = args.models or "resnet"
        args.configs = args.configs or "resnet-b8"
        args.concurrency = args.concurrency or (32,)
        # --hog-cores '' gives the same plan without a hog: the control run.
        args.hog_cores = "0" if args.hog_cores is None else args.hog_cores
    args.models = args.models or "mlp,resnet"
    if args.tuned is None:
        args.tuned = "" if contended else "mlp"
    try:
        hog_cores = parse_cores(args.hog_cores, os.sched_getaffinity(0)) if args.hog_cores else ()
    except ValueError as error:
        parser.error(str(error))
    models = _csv(args.models)
    servers = _csv(args.servers)
    if args.baseline_python is not None and TORCHWICK_BASE not in servers:
        servers += (TORCHWICK_BASE,)
    if TORCHWICK_BASE in servers and args.baseline_python is None:
        parser.error(f"server {TORCHWICK_BASE} needs --baseline-python")
    for model in models:
        if model not in MODEL_NAMES:
            parser.error(f"unknown model {model!r}")
    for server in servers:
        if server not in LABELS:
            parser.error(f"unknown server {server!r}; known: {', '.join(LABELS)}")
    for line in [*args.torchwick_property, *args.torchserve_property]:
        if "=" not in line or "\n" in line:
            parser.error(f"expected KEY=VALUE, got {line!r}")

    def pick(value: Any, full: Any, smoke: Any) -> Any:
        return value if value is not None else (smoke if quick else full)

    return Options(
        models=models,
        servers=servers,
        concurrency=pick(args.concurrency, (1, 8, 32, 64), (1, 32)),
        tuned_models=tuple(m for m in _csv(args.tuned) if m in models),
        tuned_concurrency=args.tuned_concurrency,
        seconds=pick(args.seconds, 4.0, 1.0),
        warmup=pick(args.warmup, 0.5, 0.3),
        repeats=max(1, pick(args.repeats, 3, 1)),
        max_batch_delay=args.max_batch_delay,
        ceiling_seconds=pick(args.ceiling_seconds, 0.5, 0.3),
        startup_repeats=max(1, pick(args.startup_repeats, 3, 1)),
        ping_repeats=max(1, args.ping_repeats),
        max_requests=args.max_requests,
        request_timeout=args.request_timeout,
        start_timeout=args.start_timeout,
        archiver=args.archiver,
        torchserve_venv=args.torchserve_venv,
        torchwick_python=args.torchwick_python,
        baseline_python=args.baseline_python,
        properties={
            TORCHWICK: tuple(args.torchwick_property),
            # The baseline is the same server at another commit: it gets the same extra lines.
            TORCHWICK_BASE: tuple(args.torchwick_property),
            TORCHSERVE: tuple(args.torchserve_property),
        },
        json_path=args.json,
        keep=bool(args.keep),
        quick=quick,
        hog_cores=hog_cores,
        only_configs=_csv(args.configs),
        contended=contended,
    )


# --- what gets served -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ServingConfig:
    """One way to serve one model, measured at some concurrencies on every server."""

    key: str
    model: str
    batch_size: int
    max_batch_delay: int
    workers: int
    concurrencies: tuple[int, ...]
    description: str

    @property
    def threads_per_worker(self) -> int:
        return max(1, CORES // self.workers)

    def torchserve_env(self) -> dict[str, str]:
        # TorchServe does not budget threads: with 2 workers on 2 cores each worker's torch
        # would start 2 OpenMP threads. Its best tuned config pins one thread per worker.
        return {"OMP_NUM_THREADS": "1"} if self.workers > 1 else {}


def plan(options: Options) -> list[ServingConfig]:
    configs: list[ServingConfig] = []
    for model in options.models:
        configs.append(
            ServingConfig(f"{model}-b1", model, 1, options.max_batch_delay, 1,
                          options.concurrency, "batch 1, 1 worker")
        )  # fmt: skip
        configs.append(
            ServingConfig(f"{model}-b8", model, 8, options.max_batch_delay, 1,
                          options.concurrency, f"batch 8 +{options.max_batch_delay} ms, 1 worker")
        )  # fmt: skip
        if model in options.tuned_models:
            configs.append(
                ServingConfig(f"{model}-b8-w2", model, 8, options.max_batch_delay, 2,
                              options.tuned_concurrency,
                              f"batch 8 +{options.max_batch_delay} ms, 2 workers x 1 thread")
            )  # fmt: skip
    if options.only_configs:
        configs = [c for c in configs if c.key in options.only_configs]
    return configs


# --- results --------------------------------------------------------------------------------------


@dataclass
class PointRecord:
    config: str
    model: str
    batch_size: int
    workers: int
    server: str
    concurrency: int
    repeat: int
    window_s: float
    ok: int
    throughput: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    statuses: dict[int, int]
    connection_errors: int
    timeouts: int
    cpu: dict[str, float]

    @property
    def errors(self) -> int:
        return sum(self.statuses.values()) + self.connection_errors + self.timeouts


@dataclass
class Results:
    meta: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)
    ceilings: list[dict[str, Any]] = field(default_factory=list)
    client_ceiling: list[dict[str, Any]] = field(default_factory=list)
    startup: list[dict[str, Any]] = field(default_factory=list)
    config_starts: list[dict[str, Any]] = field(default_factory=list)
    points: list[PointRecord] = field(default_factory=list)
    #: Per torchwick server and config: how often its workers logged a drop to one thread.
    contention_drops: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["points"] = [asdict(p) for p in self.points]
        return data


def median(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return statistics.median(finite) if finite else float("nan")


# --- formatting -----------------------------------------------------------------------------------


def fmt_rate(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def fmt_ms(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 1000 else f"{value:,.0f}"


def fmt_ratio(numerator: float | None, denominator: float | None) -> str:
    if not numerator or not denominator or math.isnan(numerator) or math.isnan(denominator):
        return "-"
    return f"{numerator / denominator:.2f}x"


def fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def fmt_mb(value: float | None) -> str:
    return "-" if value is None else f"{value / MB:,.0f} MB"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return indent + "  ".join(parts).rstrip()

    rule = indent + "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def say(text: str = "") -> None:
    print(text, flush=True)


def progress(text: str) -> None:
    print(f"  .. {text}", file=sys.stderr, flush=True)


# --- environment checks ---------------------------------------------------------------------------


def torchwick_reason(python: Path, cwd: Path) -> str | None:
    """Why torchwick cannot be benchmarked here, or ``None`` when it can.

    Run in ``cwd``: ``-m`` puts the working directory first on ``sys.path``, so run from a
    checkout it would check that checkout's torchwick rather than ``python``'s own.
    """
    try:
        completed = subprocess.run(
            [str(python), "-m", "torchwick.server", "--help"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=cwd,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"`{python} -m torchwick.server --help` failed: {error}"
    if completed.returncode != 0:
        tail = (completed.stderr or completed.stdout).strip().splitlines()[-1:] or ["?"]
        return f"`python -m torchwick.server --help` exited {completed.returncode}: {tail[0]}"
    return None


def torchserve_reason(venv: Path) -> str | None:
    """Why TorchServe cannot be benchmarked here, or ``None`` when it can."""
    for tool in ("torchserve", "torch-model-archiver"):
        if not (venv / "bin" / tool).exists():
            return f"{venv / 'bin' / tool} not found (build it: benchmarks/torchserve_env.sh)"
    java = os.environ.get("JAVA_HOME")
    java_cmd = str(Path(java) / "bin" / "java") if java else "java"
    try:
        subprocess.run([java_cmd, "-version"], capture_output=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError) as error:
        return f"Java not usable ({java_cmd}): {error}"
    return None


def tool_version(command: Sequence[str]) -> str:
    try:
        completed = subprocess.run(
            list(command), capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (completed.stdout + completed.stderr).strip().splitlines()
    return text[0] if text else "?"


# --- the run --------------------------------------------------------------------------------------


class Benchmark:
    """Holds what a run builds and starts, so that ``close`` can always clean it up."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.workdir = Path(tempfile.mkdtemp(prefix="torchwick-bench-"))
        self.results = Results()
        self.running: list[Server] = []
        self.trivial: subprocess.Popen[str] | None = None
        self.runner = asyncio.Runner(loop_factory=new_event_loop)
        self._task: asyncio.Task[Any] | None = None
        self._interrupted = False
        self.models: dict[str, BenchModel] = {}
        self.meter = CeilingMeter()
        self.stores: dict[str, Path] = {}
        self.servers: list[str] = []
        self.hog: Hog | None = None

    # ---- lifecycle

    def run_async(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run one load on the runner's loop; an ``interrupt`` cancels it cleanly."""

        async def main() -> T:
            self._task = asyncio.current_task()
            return await coroutine

        try:
            return self.runner.run(main())
        except asyncio.CancelledError:
            if self._interrupted:
                raise KeyboardInterrupt from None
            raise
        finally:
            self._task = None

    def interrupt(self) -> None:
        """SIGTERM/SIGINT: cancel the load in progress (it then stops), or raise at once."""
        self._interrupted = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
        else:
            raise KeyboardInterrupt

    def close(self) -> None:
        """Stop every server and helper this run started and remove its files.

        Ctrl-C and SIGTERM are ignored meanwhile, so a second one cannot cut the cleanup short.
        """
        previous = {
            sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            self._close()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _close(self) -> None:
        if self.hog is not None:
            self.hog.stop()
            self.hog = None
        for server in self.running:
            with contextlib.suppress(Exception):
                server.stop()
        self.running.clear()
        if self.trivial is not None:
            _stop_process_group(self.trivial)
            self.trivial = None
        with contextlib.suppress(Exception):
            self.runner.close()
        if self.options.keep:
            say(f"work dir kept: {self.workdir}")
        else:
            remove_tree(self.workdir)

    def _start(self, server: Server, probe: tuple[str, bytes, str] | None) -> StartTiming:
        self.running.append(server)
        return server.start(self.options.start_timeout, probe)

    def _stop(self, server: Server) -> None:
        """Stop ``server``; drop its working dir (TorchServe logs every request) unless --keep."""
        server.stop()
        if server in self.running:
            self.running.remove(server)
        if not self.options.keep:
            remove_tree(server.workdir)

    # ---- steps

    def start_hog(self) -> None:
        """Start the ``--hog-cores`` hogs (verified: alive, pinned, busy) for the whole run."""
        if not self.options.hog_cores:
            return
        self.hog = Hog(self.options.hog_cores)
        self.hog.start()
        self.results.meta["hog"] = {"cores": list(self.options.hog_cores), "pids": self.hog.pids}
        say(
            f"  CPU hog: busy-loop pid(s) {', '.join(map(str, self.hog.pids))} pinned to core(s) "
            f"{', '.join(map(str, self.options.hog_cores))}, normal priority, verified busy"
        )
        say()

    def check_servers(self) -> None:
        for name in self.options.servers:
            if name in (TORCHWICK, TORCHWICK_BASE):
                reason = torchwick_reason(self._python(name), self.workdir)
            else:
                reason = torchserve_reason(self.options.torchserve_venv)
            if reason is None:
                self.servers.append(name)
            else:
                self.results.skipped[name] = reason

    def describe_environment(self) -> None:
        options = self.options
        meta: dict[str, Any] = {
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cores": CORES,
            "load_average": os.getloadavg(),
            "client_loop": loop_name(),
            "seconds": options.seconds,
            "warmup": options.warmup,
            "repeats": options.repeats,
            "concurrency": options.concurrency,
            "max_batch_delay_ms": options.max_batch_delay,
            "archiver": options.archiver,
            "extra_properties": {k: list(v) for k, v in options.properties.items() if v},
            "servers": list(self.servers),
            "hog_cores": list(options.hog_cores),
        }
        if TORCHSERVE in self.servers:
            meta["torchserve"] = tool_version(
                [str(options.torchserve_venv / "bin" / "torchserve"), "--version"]
            )
            meta["java"] = tool_version(["java", "-version"])
        for name in (TORCHWICK, TORCHWICK_BASE):
            if name in self.servers:
                meta[name] = source_of(self._python(name), self.workdir)
        self.results.meta = meta
        say("== torchwick serving benchmark ==")
        say(
            f"  {CORES} cores, load average {' '.join(f'{v:.2f}' for v in meta['load_average'])},"
            f" Python {meta['python']}, torch {meta['torch']}, client on {meta['client_loop']}"
        )
        for name in self.servers:
            extra = options.properties.get(name)
            say(
                f"  {LABELS[name]}: {meta.get(name, '?')}"
                + (f" (config.properties extra: {', '.join(extra)})" if extra else "")
            )
        for name, reason in self.results.skipped.items():
            say(f"  {LABELS[name]} column SKIPPED: {reason}")
        archives = (
            "each server's own torch-model-archiver"
            if options.archiver == "own"
            else "torchwick's archiver for both servers"
        )
        say(
            f"  points: {options.seconds:g} s measured after {options.warmup:g} s warm-up, "
            f"{options.repeats} repeat(s) per server, servers alternated; archives: {archives}"
        )
        say()

    def build(self) -> None:
        build_dir = self.workdir / "build"
        build_dir.mkdir()
        for name in self.options.models:
            progress(f"building {name}")
            self.models[name] = build_model(name, build_dir)
        archivers: dict[str, list[str]] = {
            TORCHWICK: [str(self.options.torchwick_python), "-m", "torchwick.archiver"],
            TORCHWICK_BASE: [str(self._python(TORCHWICK_BASE)), "-m", "torchwick.archiver"],
            TORCHSERVE: [str(self.options.torchserve_venv / "bin" / "torch-model-archiver")],
        }
        if self.options.archiver == "torchwick":
            archivers[TORCHSERVE] = archivers[TORCHWICK]
        for server in self.servers:
            store = self.workdir / f"store-{server}"
            for model in self.models.values():
                extra = build_dir / model.name / "input_shape.json"
                extra.parent.mkdir(exist_ok=True)
                extra.write_text(json.dumps({"shape": list(model.input_shape)}))
                progress(f"archiving {model.name} for {LABELS[server]}")
                build_archive(
                    archivers[server],
                    name=model.name,
                    serialized_file=model.scripted_path,
                    handler=HANDLER,
                    extra_files=[extra],
                    export_path=store,
                )
            self.stores[server] = store

    def ceiling(self, config: ServingConfig) -> Ceiling:
        """One timing of the config's in-process ceiling (interleaved with its points)."""
        ceiling = self.meter.measure(
            self.models[config.model],
            config.batch_size,
            config.threads_per_worker,
            self.options.ceiling_seconds,
        )
        self.results.ceilings.append({"config": config.key, **asdict(ceiling)})
        say(
            f"   {'ceiling':<10} {'':<6}    {fmt_rate(ceiling.samples_per_s):>7} samples/s "
            f"(batch {config.batch_size}, {config.threads_per_worker} thread(s))"
        )
        return ceiling

    def client_ceiling(self) -> None:
        """The client against a trivial endpoint (its own limit), per body and concurrency."""
        command = [sys.executable, str(HERE / "bench_client.py"), "--trivial-server"]
        self.trivial = subprocess.Popen(
            command, stdout=subprocess.PIPE, text=True, start_new_session=True
        )
        assert self.trivial.stdout is not None
        port = int(self.trivial.stdout.readline())
        seconds = min(self.options.seconds, 2.0)
        for model in self.models.values():
            request = build_request(HOST, port, "/predictions/x", model.body, model.content_type)
            for concurrency in self.options.concurrency:
                progress(f"client ceiling {model.name} c={concurrency}")
                result, cpu = self._load(
                    port=port,
                    request=request,
                    concurrency=concurrency,
                    seconds=seconds,
                    root=self.trivial.pid,
                    classify=lambda pid, info: "frontend",
                )
                self.results.client_ceiling.append(
                    {
                        "body": model.name,
                        "body_bytes": len(model.body),
                        "concurrency": concurrency,
                        "throughput": result.throughput,
                        "p50_ms": result.p(0.5),
                        "p99_ms": result.p(0.99),
                        "errors": result.errors,
                        "client_cores": cpu.client_s / result.window_s,
                        "endpoint_cores": cpu.frontend_s / result.window_s,
                    }
                )
        _stop_process_group(self.trivial)
        self.trivial = None

    def _load(
        self,
        *,
        port: int,
        request: bytes,
        concurrency: int,
        seconds: float,
        root: int,
        classify: Callable[[int, Any], str],
        bystanders: Sequence[int] = (),
        warmup: float | None = None,
    ) -> tuple[LoadResult, CpuUse]:
        marks: list[CpuSnapshot] = []
        hog_marks: list[float] = []

        def mark() -> None:
            marks.append(snapshot(root, classify, bystanders))
            hog_marks.append(self.hog.cpu_s() if self.hog is not None else 0.0)

        result = self.run_async(
            run_load(
                HOST,
                port,
                request,
                concurrency=concurrency,
                warmup_s=self.options.warmup if warmup is None else warmup,
                seconds=seconds,
                max_requests=self.options.max_requests,
                request_timeout_s=self.options.request_timeout,
                on_window_start=mark,
                on_window_end=mark,
            )
        )
        time.sleep(0.1)  # let the last batch's bookkeeping settle before the next point
        cpu = difference(marks[0], marks[1])
        if self.hog is not None:
            # The hog is part of "the rest of the machine": shown apart.
            hog_s = hog_marks[1] - hog_marks[0]
            rest = max(0.0, cpu.rest_of_machine_s - hog_s)
            cpu = replace(cpu, hog_s=hog_s, rest_of_machine_s=rest)
        return result, cpu

    def startup(self) -> None:
        """Empty model store: start to /ping 200, frontend idle RSS, /ping throughput."""
        for repeat in range(self.options.startup_repeats):
            for name in self._order(repeat):
                progress(f"empty start {repeat + 1} of {LABELS[name]}")
                server = self._server(name, f"empty-{repeat}", [], {})
                try:
                    try:
                        timing = self._start(server, None)
                    except RuntimeError as error:
                        self.results.failures.append(
                            {"config": "empty", "server": name, "error": str(error)}
                        )
                        say(f"   {LABELS[name]} did not start with an empty store: {error}")
                        continue
                    time.sleep(1.0)
                    record: dict[str, Any] = {
                        "server": name,
                        "repeat": repeat,
                        "ping_s": timing.ping_s,
                        "frontend_idle_rss": server.frontend_rss(),
                    }
                    if repeat < self.options.ping_repeats:
                        request = build_request(HOST, server.inference_port, "/ping", None, None)
                        result, cpu = self._load(
                            port=server.inference_port,
                            request=request,
                            concurrency=32,
                            seconds=min(self.options.seconds, 3.0),
                            root=server.root_pid,
                            classify=server.classify,
                        )
                        record["ping_throughput_c32"] = result.throughput
                        record["ping_p50_ms"] = result.p(0.5)
                        record["ping_p90_ms"] = result.p(0.9)
                        record["ping_p99_ms"] = result.p(0.99)
                        record["ping_errors"] = result.errors
                        record["ping_frontend_cores"] = cpu.frontend_s / result.window_s
                        record["ping_client_cores"] = cpu.client_s / result.window_s
                    self.results.startup.append(record)
                finally:
                    self._stop(server)

    def _python(self, name: str) -> Path:
        """The interpreter that runs torchwick for server ``name`` (torchwick or its base)."""
        if name == TORCHWICK_BASE and self.options.baseline_python is not None:
            return self.options.baseline_python
        return self.options.torchwick_python

    def _order(self, index: int) -> list[str]:
        return list(self.servers) if index % 2 == 0 else list(reversed(self.servers))

    def _server(
        self, name: str, tag: str, models: list[ModelServing], extra_env: dict[str, str]
    ) -> Server:
        if name == TORCHSERVE:
            prefix = [str(self.options.torchserve_venv / "bin" / "torchserve")]
        else:
            prefix = [str(self._python(name)), "-m", "torchwick.server"]
        return Server(
            kind=name,
            command_prefix=prefix,
            workdir=self.workdir / f"{name}-{tag}",
            model_store=self.stores.get(name, self.workdir / f"store-{name}"),
            models=models,
            extra_env=extra_env,
            extra_properties=list(self.options.properties.get(name, ())),
            job_queue_size=max(100, 2 * max(self.options.concurrency)),
        )

    def run_config(self, index: int, config: ServingConfig) -> None:
        model = self.models[config.model]
        path = f"/predictions/{config.model}"
        probe = (path, model.body, model.content_type)
        serving = [
            ModelServing(
                config.model, f"{config.model}.mar", config.batch_size, config.max_batch_delay,
                config.workers,
            )
        ]  # fmt: skip
        say(f"-- {config.key}: {config.model}, {config.description}")
        began = time.perf_counter()
        started: dict[str, Server] = {}
        try:
            for name in self._order(index):
                env = config.torchserve_env() if name == TORCHSERVE else {}
                server = self._server(name, config.key, serving, env)
                progress(f"starting {LABELS[name]} for {config.key}")
                try:
                    timing = self._start(server, probe)
                except RuntimeError as error:
                    self._stop(server)
                    self.results.failures.append(
                        {"config": config.key, "server": name, "error": str(error)}
                    )
                    say(f"   {LABELS[name]} did not start for {config.key}: {error}")
                    continue
                started[name] = server
                self.results.config_starts.append(
                    {
                        "config": config.key,
                        "server": name,
                        "ping_s": timing.ping_s,
                        "model_s": timing.model_s,
                        "workers_seen": server.worker_count(),
                    }
                )
            # Warm each server up once at the highest concurrency (JIT, caches, connections).
            for server in started.values():
                name = server.kind
                request = build_request(
                    HOST, server.inference_port, path, model.body, model.content_type
                )
                progress(f"warming {LABELS[name]} up")
                self._load(
                    port=server.inference_port,
                    request=request,
                    concurrency=max(config.concurrencies),
                    seconds=self.options.warmup * 2,
                    root=server.root_pid,
                    classify=server.classify,
                    warmup=0.0,
                )
            for ci, concurrency in enumerate(config.concurrencies):
                for repeat in range(self.options.repeats):
                    # The ceiling is timed between points too, so it sees the same noise.
                    self.ceiling(config)
                    for name in self._order(index + ci + repeat):
                        if name in started:
                            self._point(
                                config=config,
                                started=started,
                                name=name,
                                concurrency=concurrency,
                                repeat=repeat,
                                model=model,
                            )
            for name, server in started.items():
                self.results.config_starts.append(
                    {
                        "config": config.key,
                        "server": name,
                        "frontend_rss_after_load": server.frontend_rss(),
                    }
                )
                if name != TORCHSERVE:
                    drops = contention_drops(server.workdir)
                    self.results.contention_drops.append(
                        {"config": config.key, "server": name, "drops": drops}
                    )
                    say(f"   {LABELS[name]}: workers dropped to one thread (contended) {drops}x")
        finally:
            for server in started.values():
                self._stop(server)
        say(f"   ({config.key} took {time.perf_counter() - began:.0f} s)")

    def _point(
        self,
        *,
        config: ServingConfig,
        started: dict[str, Server],
        name: str,
        concurrency: int,
        repeat: int,
        model: BenchModel,
    ) -> None:
        server = started[name]
        bystanders = [s.root_pid for n, s in started.items() if n != name]
        request = build_request(
            HOST, server.inference_port, f"/predictions/{config.model}", model.body,
            model.content_type,
        )  # fmt: skip
        result, cpu = self._load(
            port=server.inference_port,
            request=request,
            concurrency=concurrency,
            seconds=self.options.seconds,
            root=server.root_pid,
            classify=server.classify,
            bystanders=bystanders,
        )
        record = PointRecord(
            config=config.key,
            model=config.model,
            batch_size=config.batch_size,
            workers=config.workers,
            server=name,
            concurrency=concurrency,
            repeat=repeat,
            window_s=result.window_s,
            ok=result.ok,
            throughput=result.throughput,
            p50_ms=result.p(0.5),
            p90_ms=result.p(0.9),
            p99_ms=result.p(0.99),
            statuses=result.statuses,
            connection_errors=result.connection_errors,
            timeouts=result.timeouts,
            cpu=cpu.as_dict(),
        )
        self.results.points.append(record)
        errors = ""
        if record.errors:
            errors = (
                f", errors: statuses {result.statuses}, {result.connection_errors} connection, "
                f"{result.timeouts} timed out"
            )
        say(
            f"   {LABELS[name]:<10} c={concurrency:<3} #{repeat + 1}: "
            f"{fmt_rate(record.throughput):>7} req/s  p50 {fmt_ms(record.p50_ms)} ms  "
            f"p99 {fmt_ms(record.p99_ms)} ms{errors}"
        )


def contention_drops(workdir: Path) -> int:
    """Lines in a torchwick server's model log saying a worker dropped to one thread.

    Only ``logs/model_log.log`` (the server's ``log_location`` under its working directory):
    the same line is also in the server log and on its stdout.
    """
    try:
        text = (workdir / "logs" / "model_log.log").read_text(errors="replace")
    except OSError:
        return 0
    return text.count("(cores contended)")


def _stop_process_group(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


# --- the report -----------------------------------------------------------------------------------


@dataclass
class Summary:
    """Medians over the repeats of one (config, concurrency, server)."""

    throughput: float
    p50: float
    p90: float
    p99: float
    errors: int
    spread: float  # (max - min) / median of throughput
    cores: dict[str, float]
    frontend_us_per_request: float


def summarize(points: Sequence[PointRecord]) -> Summary:
    rates = [p.throughput for p in points]
    mid = median(rates)
    cores = {
        key: median([p.cpu[key] / p.window_s for p in points if p.window_s > 0])
        for key in points[0].cpu
    }
    per_request = median([p.cpu["frontend_s"] / p.ok * 1e6 for p in points if p.ok])
    return Summary(
        throughput=mid,
        p50=median([p.p50_ms for p in points]),
        p90=median([p.p90_ms for p in points]),
        p99=median([p.p99_ms for p in points]),
        errors=sum(p.errors for p in points),
        spread=(max(rates) - min(rates)) / mid if mid else float("nan"),
        cores=cores,
        frontend_us_per_request=per_request,
    )


def group(results: Results) -> dict[tuple[str, int, str], Summary]:
    buckets: dict[tuple[str, int, str], list[PointRecord]] = {}
    for point in results.points:
        buckets.setdefault((point.config, point.concurrency, point.server), []).append(point)
    return {key: summarize(points) for key, points in buckets.items()}


def config_ceiling(results: Results, config: ServingConfig) -> float | None:
    """Median of the config's ceiling timings, times its workers (each with its thread share)."""
    rates = [c["samples_per_s"] for c in results.ceilings if c["config"] == config.key]
    return median(rates) * config.workers if rates else None


def report(options: Options, configs: Sequence[ServingConfig], results: Results) -> None:
    summaries = group(results)
    known = (TORCHWICK, TORCHWICK_BASE, TORCHSERVE)
    servers = [s for s in known if s in results.meta.get("servers", [])]
    versus_ts = TORCHWICK in servers and TORCHSERVE in servers

    say()
    say("== In-process forward ceiling (TorchScript forward only, in this process)")
    rows = []
    for config in configs:
        entries = [c for c in results.ceilings if c["config"] == config.key]
        if not entries:
            continue
        rates = [c["samples_per_s"] for c in entries]
        rows.append(
            [config.key, str(config.batch_size), str(config.threads_per_worker),
             fmt_ms(median([c["forward_ms"] for c in entries])), fmt_rate(median(rates)),
             f"{fmt_rate(min(rates))}-{fmt_rate(max(rates))}", str(len(rates)),
             str(config.workers), fmt_rate(config_ceiling(results, config))]
        )  # fmt: skip
    say(table(["config", "batch", "threads", "forward ms", "samples/s", "range", "timings",
               "workers", "config ceiling"], rows))  # fmt: skip
    say(
        f"  Timed between the config's points; medians. Config ceiling = workers x samples/s "
        f"with {CORES} cores / workers threads each."
    )

    if results.client_ceiling:
        say()
        say("== Client ceiling: this client against a trivial endpoint (fixed 200 {}) ==")
        rows = [
            [c["body"], f"{c['body_bytes']:,}", str(c["concurrency"]), fmt_rate(c["throughput"]),
             fmt_ms(c["p50_ms"]), fmt_ms(c["p99_ms"]), str(c["errors"]),
             f"{c['client_cores']:.2f}", f"{c['endpoint_cores']:.2f}"]
            for c in results.client_ceiling
        ]  # fmt: skip
        say(table(["body", "bytes", "c", "req/s", "p50 ms", "p99 ms", "err", "client cores",
                   "endpoint cores"], rows))  # fmt: skip

    if results.startup or results.config_starts:
        say()
        say("== Start and memory (medians) ==")
        rows = []
        for name in servers:
            empty = [s for s in results.startup if s["server"] == name]
            starts = [s for s in results.config_starts if s["server"] == name and "ping_s" in s]
            after = [
                s["frontend_rss_after_load"]
                for s in results.config_starts
                if s["server"] == name and s.get("frontend_rss_after_load")
            ]
            pings = [s for s in empty if "ping_throughput_c32" in s]
            rss = [s["frontend_idle_rss"] for s in empty if s["frontend_idle_rss"]]
            rows.append(
                [
                    LABELS[name],
                    fmt_s(median([s["ping_s"] for s in empty]) if empty else None),
                    fmt_mb(median(rss) if rss else None),
                    fmt_rate(median([s["ping_throughput_c32"] for s in pings])) if pings else "-",
                    fmt_s(median([s["ping_s"] for s in starts]) if starts else None),
                    fmt_s(
                        median([s["model_s"] for s in starts if s["model_s"] is not None])
                        if starts
                        else None
                    ),
                    fmt_mb(max(after) if after else None),
                ]
            )
        say(
            table(
                ["server", "start->/ping 200 (empty)", "frontend idle RSS", "/ping req/s c=32",
                 "start->/ping (1 model)", "start->first 2xx", "frontend RSS after load (max)"],
                rows,
            )
        )  # fmt: skip

    if results.points:
        say()
        say(
            f"== Serving: 2xx req/s and latency in ms, medians of {options.repeats} point(s) of "
            f"{options.seconds:g} s per server; err = non-2xx + connection failures (all repeats)"
        )
        headers = ["config", "c"]
        for name in servers:
            headers += [f"{SHORT[name]} req/s", "±", "p50", "p90", "p99", "err"]
        if versus_ts:
            headers += ["tw/TS req/s", "tw/TS p50"]
        headers += ["ceiling"] + [f"{SHORT[n]}/ceil" for n in servers]
        rows = []
        for config in configs:
            ceiling = config_ceiling(results, config)
            for concurrency in config.concurrencies:
                row = [config.key, str(concurrency)]
                got = [summaries.get((config.key, concurrency, n)) for n in servers]
                if not any(got):
                    continue
                for summary in got:
                    if summary is None:
                        row += ["-"] * 6
                    else:
                        row += [fmt_rate(summary.throughput), f"{summary.spread * 50:.0f}%",
                                fmt_ms(summary.p50), fmt_ms(summary.p90), fmt_ms(summary.p99),
                                str(summary.errors)]  # fmt: skip
                if versus_ts:
                    tw, ts = got[servers.index(TORCHWICK)], got[servers.index(TORCHSERVE)]
                    row += [
                        fmt_ratio(tw.throughput if tw else None, ts.throughput if ts else None),
                        fmt_ratio(tw.p50 if tw else None, ts.p50 if ts else None),
                    ]
                row.append(fmt_rate(ceiling))
                row += [fmt_ratio(s.throughput if s else None, ceiling) for s in got]
                rows.append(row)
        say(table(headers, rows))
        say(
            "  ± = half the spread (max-min) of the repeats over the median. "
            "ceiling = workers x in-process samples/s at the config's batch and threads."
        )

        say()
        say(
            "== CPU per point (cores busy during the window, medians): frontend / workers / "
            "other server procs / client / idle server beside / rest of machine"
        )
        rows = []
        for config in configs:
            for concurrency in config.concurrencies:
                for name in servers:
                    summary = summaries.get((config.key, concurrency, name))
                    if summary is None:
                        continue
                    cores = summary.cores
                    rows.append(
                        [config.key, str(concurrency), LABELS[name],
                         f"{cores['frontend_s']:.2f}", f"{cores['workers_s']:.2f}",
                         f"{cores['server_other_s']:.2f}", f"{cores['client_s']:.2f}",
                         f"{cores['bystanders_s']:.2f}", f"{cores['rest_of_machine_s']:.2f}",
                         f"{cores.get('hog_s', 0.0):.2f}",
                         fmt_rate(summary.frontend_us_per_request)]
                    )  # fmt: skip
        say(table(["config", "c", "server", "frontend", "workers", "other", "client",
                   "beside", "rest", "hog", "frontend us/req"], rows))  # fmt: skip

        headline(configs, results, summaries, servers)

    if TORCHWICK in servers and TORCHWICK_BASE in servers:
        keys = [(c.key, n) for c in configs for n in c.concurrencies]
        report_baseline(
            keys, summaries, results.startup, table=table, fmt_rate=fmt_rate, fmt_ms=fmt_ms, say=say
        )


def headline(
    configs: Sequence[ServingConfig],
    results: Results,
    summaries: dict[tuple[str, int, str], Summary],
    servers: Sequence[str],
) -> None:
    """The ratios PERFORMANCE.md's targets are phrased in, from this run's medians."""
    keys = {c.key for c in configs}
    lines: list[str] = []

    def get(config: str, concurrency: int, server: str) -> Summary | None:
        return summaries.get((config, concurrency, server))

    if "mlp-b8" in keys:
        concurrency = 32
        candidates = {
            name: [
                (config, s)
                for config in ("mlp-b8", "mlp-b8-w2")
                if (s := get(config, concurrency, name)) is not None
            ]
            for name in servers
        }
        best = {
            name: max(found, key=lambda item: item[1].throughput)
            for name, found in candidates.items()
            if found
        }
        if best:
            text = "; ".join(
                f"{LABELS[n]} best {fmt_rate(s.throughput)} req/s ({c})"
                for n, (c, s) in best.items()
            )
            tuned = get("mlp-b8-w2", concurrency, TORCHSERVE)
            if TORCHWICK in best and tuned is not None:
                text += (
                    f"; torchwick best / TorchServe tuned (2 workers x 1 thread) = "
                    f"{fmt_ratio(best[TORCHWICK][1].throughput, tuned.throughput)}"
                )
            lines.append(f"MLP batch 8, c={concurrency}: {text}")
    tw8 = get("mlp-b8", 1, TORCHWICK)
    ts1, ts8 = get("mlp-b1", 1, TORCHSERVE), get("mlp-b8", 1, TORCHSERVE)
    if tw8 is not None and (ts1 is not None or ts8 is not None):
        lines.append(
            f"MLP c=1 p50: torchwick batch 8 {fmt_ms(tw8.p50)} ms = "
            f"{fmt_ratio(tw8.p50, ts1.p50 if ts1 else None)} of TorchServe batch 1, "
            f"{fmt_ratio(tw8.p50, ts8.p50 if ts8 else None)} of TorchServe batch 8"
        )
    resnet_b8 = next((c for c in configs if c.key == "resnet-b8"), None)
    ceiling = config_ceiling(results, resnet_b8) if resnet_b8 else None
    if ceiling:
        for name in servers:
            found = [
                s for (config, _, n), s in summaries.items() if config == "resnet-b8" and n == name
            ]
            if found:
                top = max(found, key=lambda s: s.throughput)
                lines.append(
                    f"ResNet batch 8, best c: {LABELS[name]} {fmt_rate(top.throughput)} req/s = "
                    f"{fmt_ratio(top.throughput, ceiling)} of the in-process batch-8 ceiling "
                    f"({fmt_rate(ceiling)} samples/s)"
                )
    empty = {n: [s for s in results.startup if s["server"] == n] for n in servers}
    for name, starts in empty.items():
        if starts:
            rss = [s["frontend_idle_rss"] for s in starts if s["frontend_idle_rss"]]
            lines.append(
                f"{LABELS[name]}: ready (/ping 200) {fmt_s(median([s['ping_s'] for s in starts]))}"
                f" after start, frontend idle RSS {fmt_mb(median(rss) if rss else None)}"
            )
    hog = results.meta.get("hog")
    if hog:
        for (config, concurrency, name), s in sorted(summaries.items()):
            other = summaries.get((config, concurrency, TORCHSERVE))
            if name == TORCHWICK and other is not None:
                lines.append(
                    f"Under a CPU hog on core(s) {','.join(map(str, hog['cores']))}: {config} "
                    f"c={concurrency} torchwick {fmt_rate(s.throughput)} req/s, TorchServe "
                    f"{fmt_rate(other.throughput)} req/s = "
                    f"{fmt_ratio(s.throughput, other.throughput)}"
                )
    if lines:
        say()
        say("== Headline (this run's medians; the targets are in shared/design/PERFORMANCE.md)")
        for line in lines:
            say(f"  - {line}")


# --- entry point ----------------------------------------------------------------------------------


@contextlib.contextmanager
def interruptible(benchmark: Benchmark) -> Iterator[None]:
    """Route SIGTERM (and Ctrl-C, unless ignored) to ``benchmark.interrupt``.

    So every ``finally`` (server stops) still runs, and a load in progress is cancelled as an
    asyncio task rather than by an exception raised inside an event-loop callback.
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        benchmark.interrupt()

    signals = [signal.SIGTERM]
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signals.append(signal.SIGINT)
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    configs = plan(options)
    benchmark = Benchmark(options)
    started = time.perf_counter()
    status = 0
    with interruptible(benchmark):
        try:
            benchmark.check_servers()
            benchmark.describe_environment()
            benchmark.build()
            if not options.contended:
                benchmark.client_ceiling()
                if benchmark.servers:
                    benchmark.startup()
            try:
                benchmark.start_hog()
            except RuntimeError as error:
                # Without the hog there is no contended figure to take: say why and stop.
                say(f"  CPU hog did not start: {error}")
                configs = []
                status = 2
            for index, config in enumerate(configs):
                if benchmark.servers:
                    benchmark.run_config(index, config)
                else:
                    say(f"-- {config.key}: {config.model}, {config.description}")
                    for _ in range(options.repeats):
                        benchmark.ceiling(config)
        except KeyboardInterrupt:
            status = 130
        finally:
            benchmark.close()
    if status == 130:
        say("\n== INTERRUPTED: servers stopped; what was measured so far follows ==")
        benchmark.results.meta["interrupted"] = True
    report(options, configs, benchmark.results)
    say()
    say(f"total {time.perf_counter() - started:.0f} s")
    if options.json_path is not None:
        options.json_path.parent.mkdir(parents=True, exist_ok=True)
        options.json_path.write_text(json.dumps(benchmark.results.to_json(), indent=2) + "\n")
        say(f"results written to {options.json_path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
