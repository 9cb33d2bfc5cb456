"""The torchserve / torchwick command lines: flags, options and the foreground path."""

from __future__ import annotations

from pathlib import Path

import pytest

from torchwick import cli as torchwick_cli
from torchwick.server import cli, daemon
from torchwick.server.config import CliOptions
from torchwick.server.settings import Settings


def parse(*argv: str) -> CliOptions:
    return cli.options_from_args(cli.build_parser().parse_args(list(argv)))


def test_torchserve_flags_and_aliases() -> None:
    options = parse(
        "--start",
        "--model-store",
        "store",
        "--models",
        "a=a.mar",
        "b.mar",
        "--ts-config",
        "c.properties",
        "--ncs",
        "--dt",
        "--enable-model-api",
        "--foreground",
        "--log-config",
        "log.yaml",
    )
    assert options == CliOptions(
        ts_config=Path("c.properties"),
        model_store=Path("store"),
        models=("a=a.mar", "b.mar"),
        log_config=Path("log.yaml"),
        no_config_snapshots=True,
        disable_token_auth=True,
        enable_model_api=True,
        foreground=True,
    )
    assert parse("--no-config-snapshots", "--disable-token-auth") == CliOptions(
        no_config_snapshots=True, disable_token_auth=True
    )


def test_start_stop_version_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.build_parser().parse_args(["--start", "--stop"])
    assert caught.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


def test_forward_args_round_trip(tmp_path: Path) -> None:
    options = CliOptions(
        ts_config=Path("c.properties"),
        model_store=Path("store"),
        models=("all",),
        no_config_snapshots=True,
        disable_token_auth=True,
        enable_model_api=True,
    )
    forwarded = parse("--foreground", *cli.forward_args(options, tmp_path))
    assert forwarded.ts_config == tmp_path / "c.properties"
    assert forwarded.model_store == tmp_path / "store"
    assert forwarded.models == ("all",)
    assert forwarded.foreground
    assert (forwarded.no_config_snapshots, forwarded.disable_token_auth) == (True, True)
    assert forwarded.enable_model_api


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.torchserve_main(["-v"]) == 0
    assert "torchwick 0.1.0" in capsys.readouterr().out
    assert torchwick_cli.main(["--version"]) == 0
    assert "TorchServe 0.12.0" in capsys.readouterr().out


def test_model_store_is_mandatory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TS_CONFIG_FILE", raising=False)
    assert cli.torchserve_main(["--foreground"]) == 1
    assert "--model-store is required" in capsys.readouterr().err
    assert cli.torchserve_main(["--model-store", "absent"]) == 1
    assert "model_store: " in capsys.readouterr().err


def test_ignored_flags_warn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.torchserve_main(["--ppath", "p", "--workflow-store", "w", "--foreground"]) == 1
    err = capsys.readouterr().err
    assert "--plugins-path is not supported" in err
    assert "--workflow-store is not supported" in err


def test_stop_without_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    assert torchwick_cli.main(["stop"]) == 0
    assert "not running" in capsys.readouterr().out


def test_dispatcher_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert torchwick_cli.main([]) == 2
    assert torchwick_cli.main(["frobnicate"]) == 2
    assert torchwick_cli.main(["serve", "--stop"]) == 2
    assert torchwick_cli.main(["--help"]) == 0
    assert "usage: torchwick" in capsys.readouterr().out


def test_dispatcher_archive(capsys: pytest.CaptureFixture[str]) -> None:
    assert torchwick_cli.main(["archive", "--help"]) == 0
    assert "torchwick archive" in capsys.readouterr().out


def test_serve_runs_foreground_with_pid_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.delenv("TS_CONFIG_FILE", raising=False)
    seen: list[Settings] = []

    def fake_serve(settings: Settings) -> int:
        seen.append(settings)
        record = daemon.read_pid_record(tmp_path / daemon.PID_FILE_NAME)
        assert record is not None and record.key_file == str(tmp_path / "key_file.json")
        settings.key_file.write_text("{}")
        return 3

    monkeypatch.setattr(cli, "_load_serve", lambda: fake_serve)
    assert torchwick_cli.main(["serve", "--model-store", "store", "--dt"]) == 3
    assert seen[0].foreground and seen[0].disable_token_authorization
    assert seen[0].model_store == store
    assert not (tmp_path / daemon.PID_FILE_NAME).exists()
    assert not (tmp_path / "key_file.json").exists()


def test_foreground_refuses_a_second_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(daemon, "_is_torchwick_process", lambda pid: True)
    pid_path = tmp_path / daemon.PID_FILE_NAME
    daemon.claim_pid_file(pid_path, daemon.PidRecord(1, "k", 0.0))
    monkeypatch.setattr(cli, "_load_serve", lambda: lambda settings: 0)
    settings = Settings(key_file=tmp_path / "key_file.json", model_store=tmp_path)
    assert cli.run_foreground(settings, {"TMPDIR": str(tmp_path)}) == 1
    assert "already running (pid 1)" in capsys.readouterr().err
    assert daemon.read_pid_record(pid_path) == daemon.PidRecord(1, "k", 0.0)


def test_stale_pid_file_is_replaced(tmp_path: Path) -> None:
    pid_path = tmp_path / daemon.PID_FILE_NAME
    pid_path.write_text('{"pid": 999999999, "key_file": "k", "started_at": 0}')
    daemon.claim_pid_file(pid_path, daemon.PidRecord(123, "k2", 1.0))
    assert daemon.read_pid_record(pid_path) == daemon.PidRecord(123, "k2", 1.0)
    assert oct(pid_path.stat().st_mode & 0o777) == oct(0o600)
    daemon.release_pid_file(pid_path, 456)
    assert pid_path.exists()
    daemon.release_pid_file(pid_path, 123)
    assert not pid_path.exists()
