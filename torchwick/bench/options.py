"""``torchwick bench`` options: parsed by argparse, checked, frozen into :class:`BenchOptions`.

Every bad option is a usage error (exit 2) naming the option and what is wrong. The target
policy (loopback only unless allowed) is checked later, with the URLs resolved, in
:mod:`torchwick.bench.target`.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torchwick.bench.load import Arrivals, Mode

MAX_CONCURRENCY = 4096
MAX_RATE = 1_000_000.0
MAX_POINTS = 64
MAX_DURATION_S = 600.0
MAX_WARMUP_S = 120.0
MAX_TIMEOUT_S = 300.0
MAX_REQUESTS = 100_000_000
MAX_REPEATS = 100
MAX_TIME_LIMIT_S = 7200.0
MAX_BODY_BYTES = 64 * 1024 * 1024
METHODS = ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH")

DESCRIPTION = """\
Load a running model server (torchwick or TorchServe) and print throughput, latency
percentiles (p50/p90/p99/max) and errors by status for each load point.

Closed loop (--concurrency): N client connections, each sending its next request as soon as
the previous one is answered; latency is from send to answer.

Open loop (--rate): requests are due at the times of a Poisson arrival process (or a fixed
rate) whatever the server does, taken by up to --connections connections. Latency is measured
from each request's scheduled send time, not from when a free connection picked it up, so a
server that stalls is charged for the requests that queued behind the stall
(coordinated-omission safe).

Only loopback targets are loaded unless --allow-remote or --allow-host says otherwise. Every
run is bounded: --duration and --max-requests per point, --time-limit for the whole run (the
run ends at most --timeout + 1 s after it).
"""

EPILOG = """\
exit status: 0 done; 2 bad options; 3 target refused (not loopback, not allowed);
4 target unreachable; 5 --time-limit reached (partial results printed and written)

examples:
  torchwick bench http://127.0.0.1:8080/predictions/mlp --body-file x.json \\
      --content-type application/json --token "$KEY" --concurrency 1,8,32
  torchwick bench http://127.0.0.1:8080/ping --rate 500,1000 --duration 5 --json out.json
  torchwick bench http://127.0.0.1:8080/predictions/mlp \\
      --compare http://127.0.0.1:9080/predictions/mlp --body '[1,2]' --repeats 3 --plot p.png
"""


@dataclass(frozen=True)
class BenchOptions:
    """Checked options of one run."""

    url: str
    compare_url: str | None
    method: str
    body: bytes | None
    body_source: str
    headers: tuple[tuple[str, str], ...]
    token: str | None
    compare_token: str | None
    #: Names of the targets in the report, the JSON and the plot (default: the URLs).
    label: str | None
    compare_label: str | None
    mode: Mode
    loads: tuple[float, ...]
    connections: int
    arrivals: Arrivals
    seed: int
    duration_s: float
    warmup_s: float
    max_requests: int
    timeout_s: float
    repeats: int
    time_limit_s: float
    allow_remote: bool
    allow_hosts: tuple[str, ...]
    cacert: Path | None
    json_path: Path | None
    plot_path: Path | None
    progress: str

    @property
    def targets(self) -> int:
        return 1 if self.compare_url is None else 2

    @property
    def planned_s(self) -> float:
        """The run's nominal length: every point's warm-up and window."""
        points = len(self.loads) * self.repeats * self.targets
        return points * (self.warmup_s + self.duration_s)


class UsageError(Exception):
    """An option that cannot be used; the message names it."""


def build_parser(prog: str = "torchwick bench") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("url", help="target URL, e.g. http://127.0.0.1:8080/predictions/mlp")
    p.add_argument("--compare", metavar="URL2", help="a second server, alternated with the first")
    body = p.add_mutually_exclusive_group()
    body.add_argument("--body", metavar="TEXT", help="request body, inline (UTF-8)")
    body.add_argument("--body-file", metavar="PATH", type=Path, help="request body from a file")
    p.add_argument("--content-type", metavar="TYPE", help="Content-Type header of the body")
    p.add_argument("--method", type=str.upper, help="default: POST with a body, GET without")
    p.add_argument(
        "--header", metavar="'NAME: VALUE'", action="append", default=[], help="extra header"
    )
    token = p.add_mutually_exclusive_group()
    token.add_argument("--token", help="bearer token: sends 'Authorization: Bearer TOKEN'")
    token.add_argument(
        "--token-file", metavar="PATH", type=Path, help="read the token from a file (not in ps)"
    )
    compare_token = p.add_mutually_exclusive_group()
    compare_token.add_argument("--compare-token", metavar="TOKEN", help="token for --compare")
    compare_token.add_argument("--compare-token-file", metavar="PATH", type=Path)
    p.add_argument("--label", metavar="NAME", help="name of the first target in the output")
    p.add_argument("--compare-label", metavar="NAME", help="name of the --compare target")
    load = p.add_mutually_exclusive_group()
    load.add_argument(
        "--concurrency",
        metavar="N[,N...]",
        help="closed loop: connections per point (default 1,8,32)",
    )
    load.add_argument("--rate", metavar="R[,R...]", help="open loop: requests per second per point")
    p.add_argument(
        "--connections", type=int, default=64, help="open loop: most connections (default 64)"
    )
    p.add_argument("--arrivals", choices=("poisson", "uniform"), default="poisson")
    p.add_argument("--seed", type=int, default=0, help="seed of the Poisson schedule (default 0)")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per point (5)")
    p.add_argument("--warmup", type=float, default=1.0, help="discarded seconds per point (1)")
    p.add_argument(
        "--max-requests", type=int, default=1_000_000, help="most measured requests per point"
    )
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, s (30)")
    p.add_argument("--repeats", type=int, default=1, help="repeats of every point (1)")
    p.add_argument(
        "--time-limit", type=float, default=900.0, help="hard cap on the whole run, s (900)"
    )
    p.add_argument("--allow-remote", action="store_true", help="allow non-loopback targets")
    p.add_argument(
        "--allow-host",
        metavar="HOST",
        action="append",
        default=[],
        help="allow this host name, IP address or network (repeatable)",
    )
    p.add_argument("--cacert", type=Path, help="CA bundle for an https target")
    p.add_argument("--json", dest="json_path", metavar="FILE", type=Path, help="write results")
    p.add_argument("--plot", dest="plot_path", metavar="FILE.png", type=Path, help="write a plot")
    p.add_argument("--progress", choices=("auto", "always", "never"), default="auto")
    return p


def parse_list(text: str, option: str, *, integer: bool) -> tuple[float, ...]:
    """``1,8,32`` -> (1.0, 8.0, 32.0); raises :class:`UsageError` naming ``option``."""
    values: list[float] = []
    for raw in text.split(","):
        part = raw.strip()
        try:
            value = float(int(part)) if integer else float(part)
        except ValueError:
            kind = "integers" if integer else "numbers"
            raise UsageError(
                f"{option}: {part!r} is not a number (comma-separated {kind})"
            ) from None
        values.append(value)
    if len(values) > MAX_POINTS:
        raise UsageError(f"{option}: at most {MAX_POINTS} points, not {len(values)}")
    return tuple(values)


def _within(option: str, value: float, low: float, high: float, *, low_open: bool) -> None:
    below = value <= low if low_open else value < low
    if not math.isfinite(value) or below or value > high:
        bound = f"> {low:g}" if low_open else f">= {low:g}"
        raise UsageError(f"{option}: {value:g} is out of range (must be {bound} and <= {high:g})")


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not name or any(c in name for c in " \t") or any(c in text for c in "\r\n"):
        raise UsageError(f"--header: {text!r} is not 'Name: value'")
    return name, value


def _body(args: argparse.Namespace) -> tuple[bytes | None, str]:
    if args.body is not None:
        return args.body.encode(), "inline"
    if args.body_file is None:
        return None, "none"
    path: Path = args.body_file
    try:
        size = path.stat().st_size
        if size > MAX_BODY_BYTES:
            raise UsageError(f"--body-file: {path} is {size} bytes, over {MAX_BODY_BYTES}")
        return path.read_bytes(), str(path)
    except OSError as e:
        raise UsageError(f"--body-file: cannot read {path}: {e.strerror}") from e


def _token_file(option: str, path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{option}: cannot read {path}: {e}") from e
    return lines[0].strip() if lines else ""


def check(args: argparse.Namespace) -> BenchOptions:
    """Turn parsed arguments into :class:`BenchOptions`; raises :class:`UsageError`."""
    if args.token_file is not None:
        args.token = _token_file("--token-file", args.token_file)
    if args.compare_token_file is not None:
        args.compare_token = _token_file("--compare-token-file", args.compare_token_file)
    if args.rate is not None:
        mode: Mode = "open"
        loads = parse_list(args.rate, "--rate", integer=False)
        for rate in loads:
            _within("--rate", rate, 0, MAX_RATE, low_open=True)
    else:
        mode = "closed"
        loads = parse_list(args.concurrency or "1,8,32", "--concurrency", integer=True)
        for concurrency in loads:
            _within("--concurrency", concurrency, 1, MAX_CONCURRENCY, low_open=False)
    _within("--connections", args.connections, 1, MAX_CONCURRENCY, low_open=False)
    _within("--duration", args.duration, 0, MAX_DURATION_S, low_open=True)
    _within("--warmup", args.warmup, 0, MAX_WARMUP_S, low_open=False)
    _within("--max-requests", args.max_requests, 1, MAX_REQUESTS, low_open=False)
    _within("--timeout", args.timeout, 0, MAX_TIMEOUT_S, low_open=True)
    _within("--repeats", args.repeats, 1, MAX_REPEATS, low_open=False)
    _within("--time-limit", args.time_limit, 0, MAX_TIME_LIMIT_S, low_open=True)
    for option, value in (
        ("--compare-token", args.compare_token),
        ("--compare-label", args.compare_label),
    ):
        if value is not None and args.compare is None:
            raise UsageError(f"{option}: only with --compare")
    for option, value in (("--label", args.label), ("--compare-label", args.compare_label)):
        if value is not None and not (0 < len(value) <= 40 and value.isprintable()):
            raise UsageError(f"{option}: 1 to 40 printable characters")
    body, source = _body(args)
    method = args.method or ("POST" if body is not None else "GET")
    if method not in METHODS:
        raise UsageError(f"--method: {method!r} is not one of {', '.join(METHODS)}")
    headers = [_header(text) for text in args.header]
    names = {name.lower() for name, _ in headers}
    if args.content_type is not None:
        if "content-type" in names or any(c in args.content_type for c in "\r\n"):
            raise UsageError("--content-type: given twice or holds a line break")
        headers.append(("Content-Type", args.content_type))
    for reserved in ("host", "content-length"):
        if reserved in names:
            raise UsageError(f"--header: {reserved} is set by the tool")
    if args.token is not None and "authorization" in names:
        raise UsageError("--token: an Authorization header is already given with --header")
    for token in (args.token, args.compare_token):
        if token is not None and (not token or any(c in token for c in " \r\n")):
            raise UsageError("--token: empty or holds whitespace")
    if args.plot_path is not None:
        if args.plot_path.suffix.lower() != ".png":
            raise UsageError(f"--plot: {args.plot_path} must end in .png")
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError("--plot: needs matplotlib (pip install 'torchwick[plot]')") from None
    for option, path in (("--json", args.json_path), ("--plot", args.plot_path)):
        if path is not None and not path.parent.is_dir():
            raise UsageError(f"{option}: folder {path.parent} does not exist")
    if args.cacert is not None and not args.cacert.is_file():
        raise UsageError(f"--cacert: {args.cacert} is not a file")
    options = BenchOptions(
        url=args.url,
        compare_url=args.compare,
        method=method,
        body=body,
        body_source=source,
        headers=tuple(headers),
        token=args.token,
        compare_token=args.compare_token,
        label=args.label,
        compare_label=args.compare_label,
        mode=mode,
        loads=loads,
        connections=args.connections,
        arrivals=args.arrivals,
        seed=args.seed,
        duration_s=args.duration,
        warmup_s=args.warmup,
        max_requests=args.max_requests,
        timeout_s=args.timeout,
        repeats=args.repeats,
        time_limit_s=args.time_limit,
        allow_remote=args.allow_remote,
        allow_hosts=tuple(args.allow_host),
        cacert=args.cacert,
        json_path=args.json_path,
        plot_path=args.plot_path,
        progress=args.progress,
    )
    if options.planned_s > options.time_limit_s:
        raise UsageError(
            f"the planned run takes {options.planned_s:g} s ({len(loads)} points x "
            f"{options.repeats} repeats x {options.targets} targets x "
            f"(--warmup {options.warmup_s:g} + --duration {options.duration_s:g})), over "
            f"--time-limit {options.time_limit_s:g}; shorten it or raise --time-limit"
        )
    return options


def parse_options(argv: Sequence[str], prog: str = "torchwick bench") -> BenchOptions:
    """Parse and check ``argv``; a bad option exits with status 2 and a message naming it."""
    parser = build_parser(prog)
    args = parser.parse_args(list(argv))
    try:
        return check(args)
    except UsageError as e:
        parser.error(str(e))
