"""``torchwick bench``: check the options and targets, run the points, report, write files.

Order of a run: for each load, for each repeat, target A then target B (with ``--compare``),
so the two servers alternate point by point (ABAB...) and meet the same machine noise. Every
point is bounded (``--duration``, ``--max-requests``, drain by ``--timeout``) and the run as a
whole by ``--time-limit``: once it is reached the point in progress is cut short, nothing
more starts, and what was measured is still reported and written (exit status 5).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from torchwick.bench.http import HttpSlot, build_request, loop_name, new_event_loop
from torchwick.bench.load import PointPlan, run_point
from torchwick.bench.options import BenchOptions, parse_options
from torchwick.bench.report import ProgressLine, point_line, ratio_table, summary_table
from torchwick.bench.results import PointRecord, document, ratios, summarize, write_json
from torchwick.bench.target import Target, TargetError, TargetPolicy, TargetRefused, check_target

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_UNREACHABLE = 4
EXIT_TIME_LIMIT = 5
EXIT_INTERRUPTED = 130
#: Longest wait for the reachability check's TCP connection.
CONNECT_CHECK_S = 5.0


@dataclass(frozen=True)
class Prepared:
    """A checked target with its pre-built request."""

    label: str
    #: The target's name in the output (``--label``; the URL by default).
    name: str
    target: Target
    request: bytes
    tls: ssl.SSLContext | None

    def slot(self, _index: int) -> HttpSlot:
        """A new client connection to this target (opened at its first request)."""
        t = self.target
        return HttpSlot(t.address, t.port, self.request, self.tls, t.host)


def _error(prog: str, message: str) -> None:
    print(f"{prog}: error: {message}", file=sys.stderr)


def prepare(options: BenchOptions) -> list[Prepared]:
    """Check every URL against the policy and build its request; raises ``TargetError``."""
    policy = TargetPolicy(options.allow_remote, options.allow_hosts)
    out = []
    urls = [("A", options.url, options.token, options.label)]
    if options.compare_url is not None:
        token = options.compare_token or options.token
        urls.append(("B", options.compare_url, token, options.compare_label))
    for label, url, token, name in urls:
        target = check_target(url, policy)
        headers = list(options.headers)
        if token is not None:
            headers.append(("Authorization", f"Bearer {token}"))
        request = build_request(
            options.method, target.host_header, target.path, options.body, headers
        )
        tls = None
        if target.scheme == "https":
            cafile = str(options.cacert) if options.cacert is not None else None
            tls = ssl.create_default_context(cafile=cafile)
        out.append(Prepared(label, name or url, target, request, tls))
    return out


def reachable(target: Target, tls: ssl.SSLContext | None) -> str | None:
    """``None`` when a connection to the target opens (with its TLS handshake for https),
    else why not (refused, timed out, certificate not trusted)."""
    address = (target.address, target.port)
    try:
        with socket.create_connection(address, timeout=CONNECT_CHECK_S) as sock:
            if tls is not None:
                with tls.wrap_socket(sock, server_hostname=target.host):
                    pass
            return None
    except OSError as e:  # ssl.SSLError is one
        return f"cannot connect to {target.url} ({target.address}:{target.port}): {e}"


class Run:
    """The points of one run, kept outside the event loop so an interrupt keeps them."""

    def __init__(self, options: BenchOptions, prepared: Sequence[Prepared]) -> None:
        self.options = options
        self.prepared = prepared
        self.points: list[PointRecord] = []
        self.complete = False
        total = len(options.loads) * options.repeats * len(prepared)
        self.progress = ProgressLine(ProgressLine.wanted(options.progress), total)

    def plan(self, load: float) -> PointPlan:
        o = self.options
        return PointPlan(
            mode=o.mode,
            load=load,
            duration_s=o.duration_s,
            warmup_s=o.warmup_s,
            max_requests=o.max_requests,
            timeout_s=o.timeout_s,
            connections=o.connections,
            arrivals=o.arrivals,
            seed=o.seed,
        )

    async def execute(self) -> None:
        deadline = time.perf_counter() + self.options.time_limit_s
        for load in self.options.loads:
            for repeat in range(self.options.repeats):
                for item in self.prepared:
                    if time.perf_counter() >= deadline:
                        return
                    self.progress.start_point(f"{item.label} load {load:g}")
                    outcome = await run_point(
                        self.plan(load),
                        item.slot,
                        deadline=deadline,
                        progress=self.progress.update,
                    )
                    self.progress.clear()
                    record = PointRecord.of(item.label, load, repeat, outcome)
                    self.points.append(record)
                    print(point_line(record, self.options.mode), flush=True)
                    if outcome.truncated:
                        return
        self.complete = True


def _header(options: BenchOptions, prepared: Sequence[Prepared]) -> str:
    lines = [f"torchwick bench ({loop_name()}), {options.mode} loop"]
    for item in prepared:
        name = "" if item.name == item.target.url else f"{item.name}: "
        lines.append(f"  {item.label}: {name}{item.target.url} (connects to {item.target.address})")
    body = f"{len(options.body)} bytes ({options.body_source})" if options.body else "none"
    lines.append(
        f"  {options.method}, body {body}; per point: warm-up {options.warmup_s:g} s, "
        f"window {options.duration_s:g} s, at most {options.max_requests} requests; "
        f"{options.repeats} repeat(s); time limit {options.time_limit_s:g} s"
    )
    if options.mode == "open":
        lines.append(
            f"  {options.arrivals} arrivals (seed {options.seed}), up to "
            f"{options.connections} connections; latency from each request's scheduled time"
        )
    return "\n".join(lines)


def bench_main(argv: Sequence[str], prog: str = "torchwick bench") -> int:
    """Run ``torchwick bench``; returns the exit status (see ``--help``)."""
    try:
        options = parse_options(argv, prog)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2)
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    try:
        prepared = prepare(options)
    except TargetRefused as e:
        _error(prog, str(e))
        return EXIT_REFUSED
    except (TargetError, ValueError, ssl.SSLError) as e:
        _error(prog, str(e))
        return EXIT_USAGE
    for item in prepared:
        problem = reachable(item.target, item.tls)
        if problem is not None:
            _error(prog, problem)
            return EXIT_UNREACHABLE
    print(_header(options, prepared), flush=True)
    run = Run(options, prepared)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    interrupted = False
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(run.execute())
    except KeyboardInterrupt:
        run.progress.clear()
        interrupted = True
        print("interrupted: reporting the points measured so far", file=sys.stderr)
    finished = datetime.now(UTC).isoformat(timespec="seconds")
    names = {item.label: item.name for item in prepared}
    urls = {item.label: item.target.url for item in prepared}
    summaries = summarize(run.points)
    if summaries:
        print()
        print(summary_table(summaries, options.mode, names))
    if options.compare_url is not None and summaries:
        print()
        print("A / B (A: first URL, B: --compare; medians over the repeats)")
        print(ratio_table(ratios(summaries), options.mode))
    if not run.complete and not interrupted:
        _error(prog, f"--time-limit {options.time_limit_s:g} s reached; results are partial")
    if options.json_path is not None:
        value = document(
            options,
            urls,
            names,
            run.points,
            started_at=started,
            finished_at=finished,
            complete=run.complete,
            loop=loop_name(),
        )
        write_json(options.json_path, value)
        print(f"wrote {options.json_path}")
    if options.plot_path is not None and summaries:
        from torchwick.bench.plot import write_plot

        path = prepared[0].target.path
        title = f"{' vs '.join(names.values())}: {options.method} {path}, {options.mode} loop"
        write_plot(options.plot_path, run.points, options.mode, names, title)
        print(f"wrote {options.plot_path}")
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if run.complete else EXIT_TIME_LIMIT
