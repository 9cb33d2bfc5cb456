"""Property-based fuzzing of the REST APIs against the server's own OpenAPI documents.

schemathesis (its ``st run`` command, one process per listener, side by side) reads each
listener's ``/openapi.json`` (OpenAPI 3.1: FastAPI's operations plus the raw inference and
OIP routes) and generates requests for every operation, valid ones and ones that break the
schema. Its ``not_a_server_error`` check fails on any 5xx answer; a schema the fuzzer cannot
use (a path parameter not declared, say) fails the run too. At least ``FUZZ_REQUESTS``
requests must be sent in all, within the test's time limit.

Left out: ``GET /token`` (it regenerates keys: the fuzzer would lock itself out).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.server import model_handlers as handlers
from tests.support.server import ServerOptions, ServerProcess, build_archive, running_server

FUZZ_REQUESTS = int(os.environ.get("TORCHWICK_FUZZ_REQUESTS", "5000"))
#: ``--max-examples`` per operation and listener (operations without inputs yield fewer).
EXAMPLES = {"inference": 250, "management": 340, "metrics": 20}
_GENERATED = re.compile(r"(\d+) generated")


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root: Path = tmp_path_factory.mktemp("fuzz")
    build_archive(root / "model_store", "echo", handlers.ECHO)
    options = ServerOptions(load_models="echo=echo.mar", config={"job_queue_size": "1000"})
    with running_server(root, options) as server:
        yield server


def _st() -> str:
    found = Path(sys.executable).with_name("st")
    if not found.exists():
        pytest.skip("schemathesis is not installed (pip install -e '.[dev]')")
    return str(found)


@pytest.mark.timeout(600)
def test_fuzzing_the_rest_apis_finds_no_5xx(fuzzed: ServerProcess, tmp_path: Path) -> None:
    runs = {}
    started = time.monotonic()
    for api, examples in EXAMPLES.items():
        command = [
            _st(),
            "run",
            f"{fuzzed.urls[api]}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--phases",
            "fuzzing",
            "--max-examples",
            str(examples),
            "--workers",
            "2",
            "--exclude-path",
            "/token",
            "--no-color",
        ]
        for name, value in fuzzed.auth(api).items() if api != "metrics" else ():  # type: ignore[arg-type]
            command += ["--header", f"{name}: {value}"]
        output = tmp_path / f"{api}.out"
        with output.open("wb") as sink:
            runs[api] = (
                subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, cwd=tmp_path),
                output,
            )
    sent = 0
    for api, (process, output) in runs.items():
        code = process.wait(timeout=580)
        text = output.read_text(errors="replace")
        assert code == 0, f"schemathesis found problems in the {api} API:\n{text[-6000:]}"
        counts = _GENERATED.findall(text)
        assert counts, text[-2000:]
        sent += int(counts[-1])
    elapsed = time.monotonic() - started
    print(f"fuzzing sent {sent} requests in {elapsed:.1f} s")
    assert sent >= FUZZ_REQUESTS
    assert httpx.get(f"{fuzzed.inference_url}/ping", timeout=30).status_code == 200
