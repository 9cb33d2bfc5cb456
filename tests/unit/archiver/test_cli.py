"""The command line, run as a real subprocess: output, exit codes, nothing partial left."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from torchwick.archiver.cli import archive_main

from .conftest import ModelInputs

CONSOLE_SCRIPT = Path(sys.executable).parent / "torch-model-archiver"


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = (
        [str(CONSOLE_SCRIPT)]
        if CONSOLE_SCRIPT.exists()
        else [sys.executable, "-m", "torchwick.archiver"]
    )
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    return subprocess.run(
        [*command, *args], cwd=cwd, check=False, capture_output=True, text=True, env=env, timeout=60
    )


def test_archive_prints_sha256_line(tmp_path: Path, inputs: ModelInputs) -> None:
    done = _run(
        "--model-name",
        "tiny",
        "-v",
        "1.0",
        "--serialized-file",
        str(inputs.weights),
        "--handler",
        f"{inputs.handler}:handle",
        "--extra-files",
        str(inputs.extra_dir),
        "-c",
        str(inputs.config),
        "-r",
        str(inputs.requirements),
        "--export-path",
        "out",
        "--archive-format",
        "zip-store",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    digest = hashlib.sha256((tmp_path / "out" / "tiny.mar").read_bytes()).hexdigest()
    assert done.stdout == f"sha256 {digest}  out/tiny.mar\n"


def test_inspect_shows_manifest_config_and_files(tmp_path: Path, inputs: ModelInputs) -> None:
    build = [
        "--model-name",
        "tiny",
        "-v",
        "2",
        "--handler",
        str(inputs.handler),
        "--serialized-file",
        str(inputs.weights),
        "-c",
        str(inputs.config),
    ]
    assert archive_main([*build, "--export-path", str(tmp_path)]) == 0
    done = _run("inspect", str(tmp_path / "tiny.mar"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert '"modelVersion": "2"' in done.stdout
    assert "batchSize: 4" in done.stdout
    size = inputs.weights.stat().st_size
    assert f"{size}  model.pt" in done.stdout
    as_json = _run("inspect", "--json", str(tmp_path / "tiny.mar"), cwd=tmp_path)
    data = json.loads(as_json.stdout)
    assert data["manifest"]["model"]["handler"] == "my_handler.py"
    assert data["modelConfig"]["handler"] == {"scale": 2}
    assert {"name": "model.pt", "size": size} in data["files"]


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["--model-name", "bad/name", "-v", "1", "--handler", "base_handler"], 1, "is not allowed"),
        (
            [
                "--model-name",
                "m",
                "-v",
                "1",
                "--handler",
                "base_handler",
                "--serialized-file",
                "no.pt",
            ],
            1,
            "serialized file not found: no.pt",
        ),
        (
            [
                "--model-name",
                "m",
                "-v",
                "1",
                "--handler",
                "base_handler",
                "--archive-format",
                "zip",
            ],
            2,
            "invalid choice: 'zip'",
        ),
        (
            ["--model-name", "m", "-v", "1", "--handler", "base_handler", "--runtime", "java"],
            2,
            "invalid choice: 'java'",
        ),
        (
            ["--model-name", "m", "--handler", "base_handler"],
            2,
            "the following arguments are required: -v/--version",
        ),
        (["inspect", "missing.mar"], 1, "model archive not found"),
    ],
)
def test_errors_are_one_line_with_exit_codes(  # noqa: PLR0917 - pytest fixtures + params
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    code: int,
    fragment: str,
) -> None:
    # In-process for speed; the subprocess tests above cover the entry point itself.
    monkeypatch.chdir(tmp_path)
    assert archive_main([*args, "--export-path", "out"] if args[0] != "inspect" else args) == code
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and fragment in captured.err
    assert not (tmp_path / "out").exists()


def test_existing_output_without_force(tmp_path: Path) -> None:
    args = ["--model-name", "m", "-v", "1", "--handler", "base_handler"]
    assert _run(*args, cwd=tmp_path).returncode == 0
    again = _run(*args, cwd=tmp_path)
    assert again.returncode == 1
    assert again.stderr.strip().endswith("m.mar already exists; pass -f/--force to overwrite it")
    assert again.stderr.count("\n") == 1
    assert _run(*args, "-f", cwd=tmp_path).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mar"]


def test_versions_and_help(tmp_path: Path) -> None:
    done = _run("--archiver-version", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("torchwick archiver ")
    assert "0.12.0" in done.stdout
    helped = _run("--help", cwd=tmp_path)
    assert helped.returncode == 0
    for flag in (
        "--model-name",
        "-v VERSION, --version VERSION",
        "--serialized-file",
        "--model-file",
        "--handler",
        "--extra-files",
        "--runtime",
        "--export-path",
        "--archive-format",
        "-f, --force",
        "-r REQUIREMENTS_FILE, --requirements-file",
        "-c CONFIG_FILE, --config-file",
    ):
        assert flag in helped.stdout
