"""Option checks and the loopback-only target policy of ``torchwick bench``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from torchwick.bench.options import UsageError, build_parser, check, parse_options
from torchwick.bench.runner import EXIT_REFUSED, EXIT_USAGE, bench_main
from torchwick.bench.target import (
    TargetError,
    TargetPolicy,
    TargetRefused,
    check_target,
    split_url,
)

URL = "http://127.0.0.1:8080/predictions/mlp"


def _check(*argv: str) -> object:
    return check(build_parser().parse_args([URL, *argv]))


def test_defaults_are_a_bounded_closed_loop_sweep() -> None:
    options = parse_options([URL])
    assert options.mode == "closed"
    assert options.loads == (1.0, 8.0, 32.0)
    assert options.method == "GET" and options.body is None
    assert options.duration_s == 5.0 and options.max_requests == 1_000_000
    assert options.planned_s == 3 * (1.0 + 5.0)


def test_body_headers_and_token(tmp_path: Path) -> None:
    body = tmp_path / "x.json"
    body.write_bytes(b"[1, 2]")
    options = parse_options(
        [URL, "--body-file", str(body), "--content-type", "application/json",
         "--header", "X-Trace: 1", "--token", "abc", "--rate", "10,20.5"]
    )  # fmt: skip
    assert options.body == b"[1, 2]" and options.method == "POST"
    assert options.headers == (("X-Trace", "1"), ("Content-Type", "application/json"))
    assert options.token == "abc"
    assert options.mode == "open" and options.loads == (10.0, 20.5)
    token_file = tmp_path / "token"
    token_file.write_text("from-a-file\n")
    assert parse_options([URL, "--token-file", str(token_file)]).token == "from-a-file"
    with pytest.raises(UsageError, match="--token-file: cannot read"):
        _check("--token-file", str(tmp_path / "missing"))
    inline = parse_options([URL, "--body", "héllo", "--method", "put"])
    assert inline.body == "héllo".encode() and inline.method == "PUT"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--concurrency", "0"], "--concurrency: 0 is out of range"),
        (["--concurrency", "1,x"], "--concurrency: 'x' is not a number"),
        (["--concurrency", "5000"], "--concurrency: 5000 is out of range"),
        (["--rate", "0"], "--rate: 0 is out of range"),
        (["--rate", "nan"], "--rate: nan is out of range"),
        (["--duration", "0"], "--duration: 0 is out of range"),
        (["--duration", "601"], "--duration: 601 is out of range"),
        (["--warmup", "-1"], "--warmup: -1 is out of range"),
        (["--timeout", "0"], "--timeout: 0 is out of range"),
        (["--max-requests", "0"], "--max-requests: 0 is out of range"),
        (["--repeats", "0"], "--repeats: 0 is out of range"),
        (["--connections", "0"], "--connections: 0 is out of range"),
        (["--time-limit", "0"], "--time-limit: 0 is out of range"),
        (["--header", "NoColon"], "--header: 'NoColon' is not 'Name: value'"),
        (["--header", "Host: x"], "--header: host is set by the tool"),
        (["--header", "Authorization: Bearer x", "--token", "y"], "--token: an Authorization"),
        (["--token", "a b"], "--token: empty or holds whitespace"),
        (["--compare-token", "x"], "--compare-token: only with --compare"),
        (["--compare-label", "x"], "--compare-label: only with --compare"),
        (["--label", "x" * 41], "--label: 1 to 40 printable characters"),
        (["--method", "BREW"], "--method: 'BREW' is not one of"),
        (["--plot", "out.svg"], "--plot: out.svg must end in .png"),
        (["--json", "/no/such/dir/x.json"], "--json: folder /no/such/dir does not exist"),
        (["--body-file", "/no/such/file"], "--body-file: cannot read /no/such/file"),
        (["--concurrency", ",".join(["1"] * 65)], "--concurrency: at most 64 points"),
        (
            ["--concurrency", "1,2,3", "--duration", "300", "--repeats", "2"],
            "the planned run takes 1806 s (3 points x 2 repeats x 1 targets",
        ),
    ],
)
def test_bad_options_are_named(argv: Sequence[str], message: str) -> None:
    with pytest.raises(UsageError) as caught:
        _check(*argv)
    assert str(caught.value).startswith(message), str(caught.value)


def test_a_usage_error_exits_2_with_the_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main([URL, "--duration", "-3"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "torchwick bench: error: --duration: -3 is out of range" in err
    assert bench_main([URL, "--concurrency", "1", "--rate", "5"]) == EXIT_USAGE
    assert "not allowed with argument" in capsys.readouterr().err


def test_help_names_the_coordinated_omission_rule(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "measured from each request's scheduled send time" in text
    assert "coordinated-omission safe" in text
    assert "3 target refused" in text


def test_url_parsing() -> None:
    assert split_url("http://127.0.0.1:8080/predictions/mlp?x=1") == (
        "http", "127.0.0.1", 8080, "/predictions/mlp?x=1"
    )  # fmt: skip
    assert split_url("https://localhost") == ("https", "localhost", 443, "/")
    assert split_url("http://[::1]:9/ping")[1:3] == ("::1", 9)
    for bad, message in (
        ("ftp://127.0.0.1/", "the scheme must be http or https"),
        ("127.0.0.1:8080", "the scheme must be http or https"),
        ("http:///x", "no host"),
        ("http://u:p@127.0.0.1/", "credentials"),
        ("http://127.0.0.1:99999/", "invalid URL"),
        ("http://127.0.0.1/a b", "whitespace"),
    ):
        with pytest.raises(TargetError, match=message):
            split_url(bad)


def _fixed(*addresses: str) -> Callable[[str, int], list[str]]:
    """A resolver answering ``addresses`` for any name (no DNS in unit tests)."""
    return lambda host, port: list(addresses)


def test_loopback_targets_pass_and_connect_to_the_checked_address() -> None:
    target = check_target("http://localhost:8080/ping", TargetPolicy(), _fixed("127.0.0.1", "::1"))
    assert target.address == "127.0.0.1"
    assert target.host_header == "localhost:8080"
    assert check_target("http://[::1]/x", TargetPolicy()).address == "::1"
    assert check_target("http://127.8.9.10:1/", TargetPolicy()).address == "127.8.9.10"


def test_remote_targets_are_refused_unless_allowed() -> None:
    policy = TargetPolicy()
    with pytest.raises(TargetRefused, match=r"192\.0\.2\.7, which is not a loopback address"):
        check_target("http://192.0.2.7:8080/ping", policy)
    # A name resolving to loopback and one remote address is refused as a whole.
    with pytest.raises(TargetRefused, match=r"10\.1\.2\.3"):
        check_target("http://mixed/", policy, _fixed("127.0.0.1", "10.1.2.3"))
    assert check_target("http://192.0.2.7/", TargetPolicy(allow_remote=True)).address == "192.0.2.7"
    by_net = TargetPolicy(allow_hosts=("192.0.2.0/24",))
    assert check_target("http://192.0.2.7/", by_net).address == "192.0.2.7"
    by_name = TargetPolicy(allow_hosts=("Bench-Box",))
    target = check_target("http://bench-box/", by_name, _fixed("10.0.0.5"))
    assert target.address == "10.0.0.5"
    with pytest.raises(TargetRefused):
        check_target("http://192.0.3.1/", by_net)


def test_a_refused_target_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["http://192.0.2.7:8080/ping", "--duration", "1"]) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert "refusing to load http://192.0.2.7:8080/ping" in err
    assert "--allow-remote" in err
