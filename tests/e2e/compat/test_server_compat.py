"""Issue 9 server behaviours through real servers started with ``torchserve --start`` from a
shell: console output (a handler's traceback) on the launcher's pipe and ``key_file.json`` in
the launch directory, HTTPS with PEM files and with a PKCS12 keystore (also gRPC TLS), a
snapshot restored after a stop (a corrupt newer one skipped), a per-model requirements
install from a wheel built here, an unimportable handler's 500, and empty query values."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.certs import make_certificate
from tests.support.server import build_archive, free_port
from torchwick.archiver import archive_model

TORCHSERVE = Path(sys.executable).parent / "torchserve"
ECHO = """
    import sys

    def handle(data, context):
        if data is None:
            return None
        body = data[0].get("body") or data[0].get("data")
        if "boom" in str(body):
            raise ValueError("the handler exploded on purpose")
        print("echo handler saw", body, flush=True)
        return [{"version": context.manifest["model"]["modelVersion"]}]
"""
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


class Launch:
    """One ``torchserve --start`` in ``cwd`` with fixed free ports; reads its pipe."""

    def __init__(self, root: Path, scheme: str = "http") -> None:
        self.root = root
        self.ports = {k: free_port() for k in ("inf", "mgmt", "metrics", "gi", "gm")}
        self.scheme = scheme
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("TS_", "TORCHWICK_"))}
        self.env.update(TMPDIR=str(root), OMP_NUM_THREADS="1")
        self.lines: list[str] = []
        self.process: subprocess.Popen[str] | None = None

    def properties(self, **extra: str) -> str:
        values = {
            "inference_address": f"{self.scheme}://127.0.0.1:{self.ports['inf']}",
            "management_address": f"{self.scheme}://127.0.0.1:{self.ports['mgmt']}",
            "metrics_address": f"{self.scheme}://127.0.0.1:{self.ports['metrics']}",
            "grpc_inference_port": str(self.ports["gi"]),
            "grpc_management_port": str(self.ports["gm"]),
            "disable_token_authorization": "true",
            "enable_model_api": "true",
            "default_workers_per_model": "1",
            **extra,
        }
        return "".join(f"{k}={v}\n" for k, v in values.items())

    def start(self, *args: str) -> int:
        """Run ``torchserve --start ARGS`` with stdout/stderr on one pipe; its exit code."""
        self.process = subprocess.Popen(
            [str(TORCHSERVE), "--start", *args],
            cwd=self.root,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, args=(self.process,), daemon=True).start()
        return self.process.wait(timeout=180)

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.append(line)

    def wait_for(self, text: str, timeout_s: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(text in line for line in list(self.lines)):
                return True
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        subprocess.run(
            [str(TORCHSERVE), "--stop"],
            cwd=self.root,
            env=self.env,
            timeout=120,
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def call(
        self,
        method: str,
        api: str,
        path: str,
        body: bytes | None = None,
        context: ssl.SSLContext | None = None,
    ) -> tuple[int, Any]:
        port = self.ports["inf" if api == "inf" else "mgmt"]
        url = f"{self.scheme}://127.0.0.1:{port}{path}"
        request = urllib.request.Request(url, data=body, method=method)
        if body is not None:
            request.add_header("Content-Type", "application/octet-stream")
        key_file = self.root / "key_file.json"
        if key_file.is_file():
            keys = json.loads(key_file.read_text())
            token = keys["inference" if api == "inf" else "management"]["key"]
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=120, context=context) as response:
                status, text = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read()
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launch]:
    run = Launch(tmp_path)
    yield run
    run.stop()


def test_console_logs_key_file_and_lenient_queries(launch: Launch) -> None:
    store = launch.root / "store"
    build_archive(store, "echo", ECHO, config={"minWorkers": 1, "maxWorkers": 1})
    (launch.root / "ts.properties").write_text(
        launch.properties(disable_token_authorization="false")
    )
    code = launch.start(
        "--ncs",
        "--ts-config",
        "ts.properties",
        "--model-store",
        "store",
        "--models",
        "echo=echo.mar",
    )
    assert code == 0, "".join(launch.lines)
    assert (launch.root / "key_file.json").is_file()  # in the directory it was started from
    assert launch.wait_for("startup model echo")
    status, answer = launch.call("POST", "inf", "/predictions/echo", b"boom")
    assert status == 500, (answer, "".join(launch.lines)[-3000:])
    # The worker's traceback arrives on the launcher's pipe after --start has returned.
    assert launch.wait_for("the handler exploded on purpose")
    assert any("Traceback" in line for line in launch.lines)
    assert launch.call("POST", "inf", "/predictions/echo", b"hi")[0] == 200
    assert launch.wait_for("echo handler saw")
    # Empty query values mean "not given".
    status, page = launch.call("GET", "mgmt", "/models?limit=&next_page_token=")
    assert status == 200 and [m["modelName"] for m in page["models"]] == ["echo"]
    assert launch.call("GET", "mgmt", "/models/echo?customized=")[0] == 200
    assert launch.call("PUT", "mgmt", "/models/echo?min_worker=1&max_worker=&synchronous=")[0] in (
        200,
        202,
    )
    assert launch.call("GET", "mgmt", "/models?limit=abc")[0] == 400


def test_unimportable_handler_fails_register_with_500(launch: Launch) -> None:
    store = launch.root / "store"
    build_archive(store, "broken", "import no_such_module_tw\n\ndef handle(d, c):\n    return d\n")
    (launch.root / "ts.properties").write_text(launch.properties())
    assert launch.start("--ncs", "--ts-config", "ts.properties", "--model-store", "store") == 0
    status, body = launch.call("POST", "mgmt", "/models?url=broken.mar&initial_workers=1")
    assert status == 500, body
    assert launch.call("GET", "mgmt", "/models/broken")[0] == 404


@needs_openssl
@pytest.mark.parametrize("kind", ["pem", "pkcs12"])
def test_https_from_config(tmp_path: Path, kind: str) -> None:
    run = Launch(tmp_path, scheme="https")
    key, cert = make_certificate(tmp_path)
    if kind == "pem":
        tls = {"private_key_file": str(key), "certificate_file": str(cert)}
    else:
        p12 = tmp_path / "keystore.p12"
        subprocess.run(
            [
                "openssl",
                "pkcs12",
                "-export",
                "-inkey",
                str(key),
                "-in",
                str(cert),
                "-out",
                str(p12),
                "-passout",
                "pass:s3cret",
            ],
            check=True,
            capture_output=True,
        )
        tls = {
            "keystore": str(p12),
            "keystore_pass": "s3cret",
            "keystore_type": "PKCS12",
            "enable_grpc_ssl": "true",
        }
    (tmp_path / "store").mkdir()
    (tmp_path / "ts.properties").write_text(run.properties(**tls))
    try:
        assert run.start("--ncs", "--ts-config", "ts.properties", "--model-store", "store") == 0, (
            "".join(run.lines)
        )
        context = ssl.create_default_context(cafile=str(cert))
        assert run.call("GET", "inf", "/ping", context=context)[0] == 200
        assert run.call("GET", "mgmt", "/models", context=context)[0] == 200
        if kind == "pkcs12":
            import grpc
            from grpc_health.v1 import health_pb2, health_pb2_grpc

            credentials = grpc.ssl_channel_credentials(cert.read_bytes())
            with grpc.secure_channel(f"127.0.0.1:{run.ports['gi']}", credentials) as channel:
                answer = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=30
                )
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
            assert not list(tmp_path.glob("**/torchwick-tls-*"))  # converted PEMs are gone
    finally:
        run.stop()


def test_https_without_certificate_fails_at_start(tmp_path: Path) -> None:
    run = Launch(tmp_path, scheme="https")
    (tmp_path / "store").mkdir()
    (tmp_path / "ts.properties").write_text(run.properties())
    assert run.start("--ncs", "--ts-config", "ts.properties", "--model-store", "store") == 1
    output = "".join(run.lines)
    assert "https needs a certificate" in output and "keystore" in output


def test_snapshot_restored_after_stop(launch: Launch) -> None:
    store = launch.root / "store"
    build_archive(store, "echo", ECHO, version="1.0", archive_name="echo-v1.mar")
    build_archive(store, "echo", ECHO, version="2.0", archive_name="echo-v2.mar")
    (launch.root / "ts.properties").write_text(launch.properties())
    assert launch.start("--ts-config", "ts.properties", "--model-store", "store") == 0
    for mar in ("echo-v1.mar", "echo-v2.mar"):
        status, body = launch.call("POST", "mgmt", f"/models?url={mar}&initial_workers=1")
        assert status == 200, body
    assert launch.call("PUT", "mgmt", "/models/echo/2.0/set-default")[0] == 200
    assert launch.call("PUT", "mgmt", "/models/echo/1.0?min_worker=2&synchronous=true")[0] == 200
    snapshots = launch.root / "logs" / "config"
    assert any(p.name.endswith("-snapshot.cfg") for p in snapshots.iterdir())
    launch.stop()
    shutdown = [p for p in snapshots.iterdir() if p.name.endswith("-shutdown.cfg")]
    assert len(shutdown) == 1
    assert '"marName": "echo-v1.mar"' in shutdown[0].read_text().replace('\\"', '"') or (
        "echo-v1.mar" in shutdown[0].read_text()
    )
    # A newer, corrupt snapshot is reported and skipped.
    corrupt = snapshots / "29991231235959999-snapshot.cfg"
    corrupt.write_text("inference_address=http://127.0.0.1:1\nmodel_snapshot={not json\n")
    launch.lines.clear()
    # No --ts-config: the newest valid snapshot is the config (ports, store, models).
    assert launch.start() == 0, "".join(launch.lines)
    assert launch.wait_for("29991231235959999-snapshot.cfg:2")
    assert launch.wait_for("startup model echo")
    status, versions = launch.call("GET", "mgmt", "/models/echo/all")
    assert status == 200, versions
    by_version = {v["modelVersion"]: v for v in versions}
    assert set(by_version) == {"1.0", "2.0"}
    assert by_version["1.0"]["minWorkers"] == 2
    assert launch.call("POST", "inf", "/predictions/echo", b"x")[1] == {"version": "2.0"}
    launch.stop()
    # --ts-config of a snapshot file restores it too.
    corrupt.unlink()
    latest = max(p for p in snapshots.iterdir() if p.name.endswith("-shutdown.cfg"))
    assert launch.start("--ts-config", str(latest), "--ncs") == 0
    status, versions = launch.call("GET", "mgmt", "/models/echo/all")
    assert status == 200 and len(versions) == 2


def _tiny_wheel(directory: Path) -> None:
    """A pure-Python wheel ``tinydep_tw-0.1`` written by hand (no build tools, no network)."""
    directory.mkdir()
    info = "tinydep_tw-0.1.dist-info"
    files = {
        "tinydep_tw/__init__.py": "VALUE = 'from the per-model wheel'\n",
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: tinydep-tw\nVersion: 0.1\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(directory / "tinydep_tw-0.1-py3-none-any.whl", "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)
        wheel.writestr(f"{info}/RECORD", record)


def _archive_with_requirements(root: Path, name: str, requirements: str) -> None:
    source = root / f"src-{name}"
    source.mkdir()
    (source / "handler.py").write_text(
        "def handle(data, context):\n"
        "    if data is None:\n        return None\n"
        "    import tinydep_tw\n"
        "    return [{'value': tinydep_tw.VALUE}]\n"
    )
    (source / "requirements.txt").write_text(requirements)
    result = archive_model(
        model_name=name,
        version="1.0",
        handler=str(source / "handler.py"),
        requirements_file=source / "requirements.txt",
        export_path=root / "out",
        force=True,
    )
    result.path.replace(root / "store" / f"{name}.mar")


def test_per_model_requirements_from_a_local_wheel(launch: Launch) -> None:
    (launch.root / "store").mkdir()
    wheels = launch.root / "wheels"
    _tiny_wheel(wheels)
    _archive_with_requirements(
        launch.root, "withdep", f"--no-index\n--find-links {wheels}\ntinydep-tw==0.1\n"
    )
    _archive_with_requirements(
        launch.root, "baddep", f"--no-index\n--find-links {wheels}\nno-such-dist-tw==9\n"
    )
    (launch.root / "ts.properties").write_text(launch.properties(install_py_dep_per_model="true"))
    assert launch.start("--ncs", "--ts-config", "ts.properties", "--model-store", "store") == 0
    status, body = launch.call("POST", "mgmt", "/models?url=withdep.mar&initial_workers=1")
    assert status == 200, body
    answer = launch.call("POST", "inf", "/predictions/withdep", b"x")
    assert answer == (200, {"value": "from the per-model wheel"})
    assert launch.wait_for("withdep-pip Successfully installed tinydep-tw-0.1")
    model_log = (launch.root / "logs" / "model_log.log").read_text()
    assert "withdep-pip Successfully installed tinydep-tw-0.1" in model_log  # the model log
    status, body = launch.call("POST", "mgmt", "/models?url=baddep.mar&initial_workers=1")
    assert status == 400, body
    assert "Custom pip package installation failed for model baddep" in body["message"]
    assert launch.call("GET", "mgmt", "/models/baddep")[0] == 404
    # Never the server's own environment.
    probe = subprocess.run(
        [sys.executable, "-c", "import tinydep_tw"], capture_output=True, check=False
    )
    assert probe.returncode != 0
